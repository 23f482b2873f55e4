"""DQN / Rainbow throughput on Pong, and whether per-step work grows with the replay buffer.

Part 1 (buffer growth): one training round = collect 10 env steps (10 envs) + Tianshou's
NaN check + 10 gradient steps, timed with 5k and with 50k transitions already in the
buffer, for Tianshou's stock VectorReplayBuffer and for ours. Part 2: the agents'
env steps/s and gradient steps/s at replay ratio 1 and 8, with and without weight
clipping and diagnostics, plus the share of training time spent in the clamp.
Usage: python -m benchmarks.bench_dqn [--rounds 20] [--gradient-steps 300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tianshou.algorithm.algorithm_base import policy_within_training_step
from tianshou.data import Batch, Collector, VectorReplayBuffer
from tianshou.env import DummyVectorEnv

from agents import dqn, rainbow
from agents.clipping import WeightClipping
from agents.offpolicy import CheckedReplayBuffer, PluginOptimizerFactory
from envs.discrete import make_env

NUM_ENVS = 10


def filled_buffer(buffer_class, transitions: int):
    buffer = buffer_class(total_size=100_000, buffer_num=NUM_ENVS, stack_num=4, ignore_obs_next=True, save_only_last_obs=True)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(64, NUM_ENVS, 4, 84, 84), dtype=np.uint8)
    for i in range(transitions // NUM_ENVS):
        obs = frames[i % 64]
        buffer.add(Batch(obs=obs, act=np.zeros(NUM_ENVS, np.int64), rew=np.zeros(NUM_ENVS, np.float32),
                         terminated=np.zeros(NUM_ENVS, bool), truncated=np.zeros(NUM_ENVS, bool), obs_next=obs, info=Batch()))
    buffer.hasnull()  # the fill itself is not what is measured
    return buffer


def seconds_per_round(buffer_class, transitions: int, rounds: int) -> float:
    factory = PluginOptimizerFactory(lambda params: torch.optim.Adam(params, lr=1e-4))
    algorithm, _ = dqn.build(dqn.Args(), (4, 84, 84), 6, factory, torch.device("cpu"), target_period=500)
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
            agent.main(["--env-id", "ALE/Pong-v5", "--replay-ratio", str(replay_ratio), "--learning-starts", "320",
                        "--total-timesteps", str(320 + env_steps), "--log-every", str(max(env_steps // 4, 10)),
                        "--target-update-period", "1000", "--run-dir", run_dir, *extra])
            events = EventAccumulator(run_dir, size_guidance={"scalars": 0}).Reload()
            sps = events.Scalars("charts/SPS")
            gps = events.Scalars("charts/gradient_steps_per_second")
    finally:
        WeightClipping.clip_now = original
    # rates after the first log interval; the clamp's share of that same window
    first, last = sps[0].wall_time, sps[-1].wall_time
    clamp = sum(seconds for wall, seconds in clamp_seconds if first <= wall <= last)
    return {"sps": statistics.mean(e.value for e in sps[1:]), "gps": statistics.mean(e.value for e in gps[1:]),
            "clamp_share": clamp / (last - first)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--gradient-steps", type=int, default=240, help="gradient steps per agent run")
    parser.add_argument("--parts", default="1,2", help="which parts to run, e.g. 1 or 1,2")
    args = parser.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, CPU\n")
    if 1 in parts:
        buffer_growth(args.rounds)
    if 2 in parts:
        agent_throughput(args.gradient_steps)


def buffer_growth(rounds: int) -> None:
    print("Part 1: one round (collect 10 steps, NaN check, 10 gradient steps), median of", rounds)
    print("| buffer | 5k transitions (ms) | 50k transitions (ms) | 50k / 5k |")
    print("|---|---|---|---|")
    for name, buffer_class in (("Tianshou VectorReplayBuffer", VectorReplayBuffer), ("ours (NaN check on new data)", CheckedReplayBuffer)):
        small, large = (seconds_per_round(buffer_class, n, rounds) for n in (5_000, 50_000))
        print(f"| {name} | {small * 1e3:.0f} | {large * 1e3:.0f} | {large / small:.2f} |")
    stored = filled_buffer(CheckedReplayBuffer, 1_000)
    per_transition = sum(np.asarray(stored._meta[key]).nbytes for key in stored._meta.keys() if key != "info") / stored.maxsize
    print(f"\nMeasured replay memory: {per_transition:,.0f} bytes per transition (frames "
          f"{stored._meta.obs.nbytes / stored.maxsize:,.0f}); 1M transitions: {per_transition * 1e6 / 1e9:.2f} GB "
          f"(storing 4-frame stacks: {4 * 84 * 84 * 1e6 / 1e9:.1f} GB, twice that with obs_next)")


def agent_throughput(gradient_steps_per_run: int) -> None:
    print("\nPart 2: Pong, 10 envs, batch 32, after a 320-step warm-up")
    print(f"Diagnostics 'on': unit health, ranks and weights every {gradient_steps_per_run // 2} gradient steps (denser than the")
    print("default 50k env steps, to be measurable in a short run); heatmaps are at the end, outside the window.")
    print("| agent | replay ratio | WC | diagnostics | env steps/s | gradient steps/s | time in the WC clamp |")
    print("|---|---|---|---|---|---|---|")
    for agent in (dqn, rainbow):
        for replay_ratio in (1, 8):
            for wc in (False, True):
                for diagnostics in (False, True):
                    extra = (["--wc-kappa", "2"] if wc else []) + ([] if diagnostics else ["--diagnostics-every", "0", "--heatmap-every", "0"])
                    if diagnostics:
                        extra += ["--diagnostics-every", str(gradient_steps_per_run // replay_ratio // 2)]
                    rates = agent_rates(agent, replay_ratio, gradient_steps_per_run, extra)
                    print(f"| {agent.__name__.split('.')[-1]} | {replay_ratio} | {'on' if wc else 'off'} | {'on' if diagnostics else 'off'} | "
                          f"{rates['sps']:.1f} | {rates['gps']:.1f} | {rates['clamp_share']:.2%} |", flush=True)


if __name__ == "__main__":
    main()
