"""DQN / Rainbow throughput on Pong, whether per-step work grows with the replay buffer, and
the whole training loop at a high replay ratio against a bare PyTorch loop.

Part 1 (buffer growth): one training round = collect 10 env steps (10 envs) + Tianshou's
NaN check + 10 gradient steps, timed with 5k and with 50k transitions already in the
buffer, for Tianshou's stock VectorReplayBuffer and for ours. Part 2: the agents'
env steps/s and gradient steps/s at replay ratio 1 and 8, with and without weight
clipping and diagnostics, plus the share of training time spent in the clamp.
Part 3 (high replay ratio on one CPU thread): gradient steps/s of the whole training loop
(``clipzoo train`` at RR 8: collection, updates, target syncs, logging) with Tianshou's stock
update and with the lean one, each divided by the rate of a bare PyTorch loop of the same
update (same network, batch, optimizer and replay sampling, no env), measured interleaved
in one process: CartPole (2 x 64 MLP, batch 128, double DQN), MinAtar Breakout DQN (batch 32,
Huber, one-step) and MinAtar Breakout Rainbow (C51, noisy dueling head, prioritized replay,
3-step returns, batch 32).
Usage: python -m benchmarks.bench_dqn [--rounds 20] [--gradient-steps 300] [--parts 1,2,3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tianshou.algorithm.algorithm_base import policy_within_training_step
from tianshou.data import Batch, Collector, SegmentTree, VectorReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.utils.net.discrete import NoisyLinear

from agents import dqn, rainbow
from agents.plugins.clipping import WeightClipping
from agents.qlearning.networks import QNetwork, RainbowNetwork
from agents.qlearning.replay import CheckedReplayBuffer
from agents.qlearning.run import build_agent
from agents.qlearning.trainer import PluginOptimizerFactory
from envs.discrete import make_env

NUM_ENVS = 10


def filled_buffer(buffer_class, transitions: int):
    buffer = buffer_class(
        total_size=100_000, buffer_num=NUM_ENVS, stack_num=4, ignore_obs_next=True, save_only_last_obs=True
    )
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(64, NUM_ENVS, 4, 84, 84), dtype=np.uint8)
    for i in range(transitions // NUM_ENVS):
        obs = frames[i % 64]
        buffer.add(
            Batch(
                obs=obs,
                act=np.zeros(NUM_ENVS, np.int64),
                rew=np.zeros(NUM_ENVS, np.float32),
                terminated=np.zeros(NUM_ENVS, bool),
                truncated=np.zeros(NUM_ENVS, bool),
                obs_next=obs,
                info=Batch(),
            )
        )
    buffer.hasnull()  # the fill itself is not what is measured
    return buffer


def seconds_per_round(buffer_class, transitions: int, rounds: int) -> float:
    factory = PluginOptimizerFactory(lambda params: torch.optim.Adam(params, lr=1e-4))
    algorithm, _ = build_agent(dqn.SPEC, dqn.Args(), (4, 84, 84), 6, factory, torch.device("cpu"), target_period=500)
    envs = DummyVectorEnv([make_env("ALE/Pong-v5", training=True) for _ in range(NUM_ENVS)])
    envs.seed(0)
    buffer = filled_buffer(buffer_class, transitions)
    collector = Collector(algorithm, envs, buffer, exploration_noise=True, raise_on_nan_in_buffer=False)
    collector.reset(reset_buffer=False)
    assert len(buffer) == transitions
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        with policy_within_training_step(algorithm.policy):
            collector.collect(n_step=NUM_ENVS)
            buffer.hasnull()  # what OffPolicyTrainer does after every collect
            for _ in range(NUM_ENVS):
                algorithm.update(sample_size=32, buffer=buffer)
        times.append(time.perf_counter() - start)
    envs.close()
    return statistics.median(times)


def agent_rates(agent, replay_ratio: int, gradient_steps: int, extra: list[str]) -> dict[str, float]:
    """Env and gradient steps per second of a short Pong run (after its first log interval)."""
    env_steps = gradient_steps // replay_ratio
    clamp_seconds = []
    original = WeightClipping.clip_now

    def timed_clip(self):
        wall, start = time.time(), time.perf_counter()
        original(self)
        clamp_seconds.append((wall, time.perf_counter() - start))

    WeightClipping.clip_now = timed_clip
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            agent.main(
                [
                    "--env-id",
                    "ALE/Pong-v5",
                    "--replay-ratio",
                    str(replay_ratio),
                    "--learning-starts",
                    "320",
                    "--total-timesteps",
                    str(320 + env_steps),
                    "--log-every",
                    str(max(env_steps // 4, 10)),
                    "--target-update-period",
                    "1000",
                    "--run-dir",
                    run_dir,
                    *extra,
                ]
            )
            events = EventAccumulator(run_dir, size_guidance={"scalars": 0}).Reload()
            sps = events.Scalars("charts/SPS")
            gps = events.Scalars("charts/gradient_steps_per_second")
    finally:
        WeightClipping.clip_now = original
    # rates after the first log interval; the clamp's share of that same window
    first, last = sps[0].wall_time, sps[-1].wall_time
    clamp = sum(seconds for wall, seconds in clamp_seconds if first <= wall <= last)
    return {
        "sps": statistics.mean(e.value for e in sps[1:]),
        "gps": statistics.mean(e.value for e in gps[1:]),
        "clamp_share": clamp / (last - first),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--gradient-steps", type=int, default=240, help="gradient steps per agent run")
    parser.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. 1 or 1,3")
    parser.add_argument("--repeats", type=int, default=3, help="part 3: interleaved repeats (median reported)")
    parser.add_argument("--env-steps", type=int, default=2000, help="part 3: env steps of each agent run at RR 8")
    parser.add_argument("--cases", default="cartpole,minatar_dqn,minatar_rainbow", help="part 3: which cases")
    args = parser.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, CPU\n")
    if 1 in parts:
        buffer_growth(args.rounds)
    if 2 in parts:
        agent_throughput(args.gradient_steps)
    if 3 in parts:
        high_replay_ratio(args.repeats, args.env_steps, args.cases.split(","))


def buffer_growth(rounds: int) -> None:
    print("Part 1: one round (collect 10 steps, NaN check, 10 gradient steps), median of", rounds)
    print("| buffer | 5k transitions (ms) | 50k transitions (ms) | 50k / 5k |")
    print("|---|---|---|---|")
    for name, buffer_class in (
        ("Tianshou VectorReplayBuffer", VectorReplayBuffer),
        ("ours (NaN check on new data)", CheckedReplayBuffer),
    ):
        small, large = (seconds_per_round(buffer_class, n, rounds) for n in (5_000, 50_000))
        print(f"| {name} | {small * 1e3:.0f} | {large * 1e3:.0f} | {large / small:.2f} |")
    stored = filled_buffer(CheckedReplayBuffer, 1_000)
    per_transition = (
        sum(np.asarray(stored._meta[key]).nbytes for key in stored._meta.keys() if key != "info") / stored.maxsize
    )
    print(
        f"\nMeasured replay memory: {per_transition:,.0f} bytes per transition (frames "
        f"{stored._meta.obs.nbytes / stored.maxsize:,.0f}); 1M transitions: {per_transition * 1e6 / 1e9:.2f} GB "
        f"(storing 4-frame stacks: {4 * 84 * 84 * 1e6 / 1e9:.1f} GB, twice that with obs_next)"
    )


def agent_throughput(gradient_steps_per_run: int) -> None:
    print("\nPart 2: Pong, 10 envs, batch 32, after a 320-step warm-up")
    print(
        f"Diagnostics 'on': unit health, ranks and weights every {gradient_steps_per_run // 2} gradient steps (denser than the"
    )
    print("default 50k env steps, to be measurable in a short run); heatmaps are at the end, outside the window.")
    print("| agent | replay ratio | WC | diagnostics | env steps/s | gradient steps/s | time in the WC clamp |")
    print("|---|---|---|---|---|---|---|")
    for agent in (dqn, rainbow):
        for replay_ratio in (1, 8):
            for wc in (False, True):
                for diagnostics in (False, True):
                    extra = (["--wc-kappa", "2"] if wc else []) + (
                        [] if diagnostics else ["--diagnostics-every", "0", "--heatmap-every", "0"]
                    )
                    if diagnostics:
                        extra += ["--diagnostics-every", str(gradient_steps_per_run // replay_ratio // 2)]
                    rates = agent_rates(agent, replay_ratio, gradient_steps_per_run, extra)
                    print(
                        f"| {agent.__name__.split('.')[-1]} | {replay_ratio} | {'on' if wc else 'off'} | {'on' if diagnostics else 'off'} | "
                        f"{rates['sps']:.1f} | {rates['gps']:.1f} | {rates['clamp_share']:.2%} |",
                        flush=True,
                    )


# ---------------------------------------------------------------- part 3: whole loop vs a bare loop
HIGH_RR_CASES = {  # agent, preset, bare loop
    "cartpole": (dqn, "dqn_cartpole"),
    "minatar_dqn": (dqn, "dqn_minatar_rr8"),
    "minatar_rainbow": (rainbow, "rainbow_minatar_rr8"),
}
REPLAY_FILL = (
    10_000  # transitions in the bare loop's replay (the agent runs hold 1k-3k: sampling cost does not depend on it)
)


class PlainReplay:
    """One env's transitions in numpy arrays; uniform sampling, or proportional (sum tree) with
    importance weights; n-step returns walked plainly."""

    def __init__(self, obs_shape, obs_dtype, actions: int, size: int, prioritized: dict | None, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.size = size
        random_obs = (
            (lambda n: self.rng.random((n, *obs_shape)) < 0.3)
            if np.issubdtype(obs_dtype, np.bool_)
            else (lambda n: self.rng.normal(size=(n, *obs_shape)).astype(np.float32))
        )
        self.obs, self.obs_next = random_obs(size), random_obs(size)
        self.act = self.rng.integers(0, actions, size)
        self.rew = self.rng.normal(size=size).astype(np.float32)
        self.terminated = self.rng.random(size) < 0.01
        self.prioritized = prioritized
        if prioritized:
            self.tree = SegmentTree(size)
            self.tree[np.arange(size)] = 1.0
            self.min_priority, self.max_priority = 1.0, 1.0

    def sample(self, batch_size: int):
        if not self.prioritized:
            return self.rng.integers(0, self.size, batch_size), 1.0
        indices = self.tree.get_prefix_sum_idx(self.rng.random(batch_size) * self.tree.reduce())
        weight = (self.tree[indices] / self.min_priority) ** -self.prioritized["beta"]
        return indices, torch.as_tensor(weight / weight.max(), dtype=torch.float32)

    def update_priorities(self, indices, losses: torch.Tensor) -> None:
        priority = np.abs(losses.numpy()) + 1e-6
        self.tree[indices] = priority ** self.prioritized["alpha"]
        self.min_priority, self.max_priority = (
            min(self.min_priority, priority.min()),
            max(self.max_priority, priority.max()),
        )

    def nstep(self, indices, n_step: int, gamma: float):
        """(discounted reward sum, bootstrap index, gamma^steps or 0 at a terminal)."""
        total, discount = np.zeros(len(indices)), np.ones(len(indices))
        last, running = indices.copy(), np.ones(len(indices), bool)
        for k in range(n_step):
            step = (indices + k) % self.size
            total += running * discount * self.rew[step]
            discount = np.where(running, discount * gamma, discount)
            last = np.where(running, step, last)
            running &= ~self.terminated[step]
        return total, last, discount * ~self.terminated[last]


def bare_update(case: str, args) -> callable:
    """One gradient step of the case's algorithm, written plainly; returns the step function."""
    gamma, batch_size = args.gamma, args.batch_size
    obs_shape = (4,) if case == "cartpole" else (4, 10, 10)
    actions = 2 if case == "cartpole" else 3
    replay = PlainReplay(
        obs_shape,
        np.float32 if case == "cartpole" else bool,
        actions,
        REPLAY_FILL,
        dict(alpha=args.alpha, beta=args.beta) if case == "minatar_rainbow" else None,
    )
    torch.manual_seed(0)
    if case == "minatar_rainbow":
        network = RainbowNetwork(obs_shape, actions, args.num_atoms, args.noisy_std)
    else:
        network = QNetwork(obs_shape, actions)
    target = copy.deepcopy(network)
    optimizer = torch.optim.Adam(network.parameters(), lr=args.learning_rate, eps=args.adam_eps, fused=True)
    period = args.target_update_period  # gradient steps
    noisy = [m for m in list(network.modules()) + list(target.modules()) if isinstance(m, NoisyLinear)]
    support = torch.linspace(args.v_min, args.v_max, args.num_atoms) if case == "minatar_rainbow" else None
    state = {"step": 0}

    def dqn_step():
        indices, _ = replay.sample(batch_size)
        returns, last, scale = replay.nstep(indices, args.n_step, gamma)
        obs, obs_next = (
            torch.as_tensor(replay.obs[indices], dtype=torch.float32),
            torch.as_tensor(replay.obs_next[last], dtype=torch.float32),
        )
        with torch.no_grad():
            next_q = target(obs_next)[0]
            if args.double_q:
                bootstrap = next_q.gather(1, network(obs_next)[0].argmax(1, keepdim=True)).squeeze(1)
            else:
                bootstrap = next_q.max(1)[0]
            y = torch.as_tensor(returns, dtype=torch.float32) + torch.as_tensor(scale, dtype=torch.float32) * bootstrap
        q = network(obs)[0].gather(1, torch.as_tensor(replay.act[indices])[:, None]).squeeze(1)
        loss = (
            torch.nn.functional.huber_loss(q, y, delta=args.huber_delta) if args.huber_delta else (y - q).pow(2).mean()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    def rainbow_step():
        for module in noisy:
            module.sample()
        indices, weight = replay.sample(batch_size)
        returns, last, scale = replay.nstep(indices, args.n_step, gamma)
        obs, obs_next = (
            torch.as_tensor(replay.obs[indices], dtype=torch.float32),
            torch.as_tensor(replay.obs_next[last], dtype=torch.float32),
        )
        with torch.no_grad():
            greedy = (network(obs_next)[0] * support).sum(2).argmax(1)
            next_dist = target(obs_next)[0][torch.arange(batch_size), greedy]
            atoms = (
                torch.as_tensor(returns, dtype=torch.float32)[:, None]
                + torch.as_tensor(scale, dtype=torch.float32)[:, None] * support
            ).clamp(args.v_min, args.v_max)
            delta = (args.v_max - args.v_min) / (args.num_atoms - 1)
            projected = (
                (1 - (atoms[:, None, :] - support[None, :, None]).abs() / delta).clamp(0, 1) * next_dist[:, None, :]
            ).sum(2)
        dist = network(obs)[0][torch.arange(batch_size), torch.as_tensor(replay.act[indices])]
        cross_entropy = -(projected * torch.log(dist + 1e-8)).sum(1)
        loss = (cross_entropy * weight).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        replay.update_priorities(indices, cross_entropy.detach())
        return loss

    step = rainbow_step if case == "minatar_rainbow" else dqn_step

    def bare_step():
        if state["step"] % period == 0:
            target.load_state_dict(network.state_dict())
        state["step"] += 1
        step().item()  # the agents read the loss once per step too

    return bare_step


def bare_rate(step, seconds: float = 8.0) -> float:
    """Steps per second of CPU time of this process (the machine may be shared; one thread)."""
    for _ in range(50):
        step()
    count, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        for _ in range(50):
            step()
        count += 50
    return count / (time.process_time() - start)


def agent_loop_rate(agent, preset: str, lean: bool, env_steps: int) -> float:
    """Gradient steps per second of CPU time of a whole ``clipzoo train`` run at RR 8, from its
    first log write to its last (start-up and warm-up excluded)."""
    from agents.qlearning.logger import RunLogger

    marks = []
    original = RunLogger.write_rates

    def marked(self, now):
        marks.append((time.process_time(), now[2]))
        original(self, now)

    RunLogger.write_rates = marked
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            agent.main(
                [
                    "--config",
                    preset,
                    "--replay-ratio",
                    "8",
                    "--learning-starts",
                    "1000",
                    "--total-timesteps",
                    str(1000 + env_steps),
                    "--log-every",
                    str(env_steps // 5),
                    "--diagnostics-every",
                    "0",
                    "--heatmap-every",
                    "0",
                    "--checkpoint-every",
                    str(10 * env_steps),
                    "--gradcov-samples",
                    "32",
                    "--run-dir",
                    run_dir,
                    "--lean-update" if lean else "--no-lean-update",
                ]
            )
    finally:
        RunLogger.write_rates = original
    (first_time, first_steps), (last_time, last_steps) = marks[0], marks[-1]
    return (last_steps - first_steps) / (last_time - first_time)


def high_replay_ratio(repeats: int, env_steps: int, cases: list[str]) -> None:
    import contextlib
    import io

    from runners.base.config import load_config_file

    print(
        "\nPart 3: RR 8, one thread: gradient steps per CPU-second of the whole training loop vs a bare PyTorch loop of the same update;"
    )
    print(f"{env_steps} env steps per agent run after a 1,000-step warm-up; median of {repeats} interleaved repeats")
    print("| case | bare loop | stock Tianshou update | lean update | stock / bare | lean / bare |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        agent, preset = HIGH_RR_CASES[case]
        args = load_config_file(agent.Args, preset)
        if not hasattr(args, "num_atoms"):
            args.alpha = args.beta = args.num_atoms = args.noisy_std = args.v_min = args.v_max = None
        step = bare_update(case, args)
        rates = {"bare": [], "stock": [], "lean": []}
        for _ in range(repeats):
            rates["bare"].append(bare_rate(step))
            for lean in (False, True):
                with contextlib.redirect_stdout(io.StringIO()):
                    rates["lean" if lean else "stock"].append(agent_loop_rate(agent, preset, lean, env_steps))
        bare, stock, lean = (statistics.median(rates[k]) for k in ("bare", "stock", "lean"))
        print(
            f"| {case} | {bare:.0f} | {stock:.0f} | {lean:.0f} | {stock / bare:.0%} | {lean / bare:.0%} |", flush=True
        )


if __name__ == "__main__":
    main()
