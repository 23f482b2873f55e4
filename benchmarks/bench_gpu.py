"""The zoo on a GPU, side by side in one process: throughput, memory and where updates wait.

(a) DQN and Rainbow (Nature CNN, Pong, batch 32): gradient steps/s of the whole training
    loop (collector, Tianshou's update, logging) at replay ratio 8, against a bare PyTorch
    loop of the same update on the same network, replay buffer and sampling. The sweep
    specs' variants (RR 1 / 8, with and without WC) are measured too, for (e).
(b) env steps/s of the collector alone (10 Pong envs, the policy on the device), against
    the same collector with random actions.
(c) PPO on Hopper-v5, ``--device <device>`` against ``--device cpu``: the measurement
    behind PPO's ``--device auto`` (the CPU).
(d) peak GPU and host memory of DQN and Rainbow updates with a 1M-transition Atari buffer.
(e) estimated GPU-hours of the full-budget Atari sweeps, from (a)'s measured rates.
(f) host-device syncs: host reads per update, by call site (runs on the CPU too).

Usage: python -m benchmarks.bench_gpu [--device cuda] [--parts a,b,c,d,e,f] [--quick]
       python -m benchmarks.bench_gpu --device cpu --quick   # exercises every part without a GPU
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tianshou.algorithm.algorithm_base import policy_within_training_step
from tianshou.data import Batch, Collector
from tianshou.env import DummyVectorEnv

from agents import dqn, ppo_continuous, rainbow
from agents.plugins.assembly import agent_optimizer
from agents.qlearning.replay import make_replay_buffer
from agents.qlearning.run import build_agent
from agents.qlearning.trainer import PluginOptimizerFactory
from benchmarks.bench_dqn import agent_rates
from benchmarks.bench_ppo import run_agent as ppo_rates
from benchmarks.common import host_read_audit, synchronize
from envs.discrete import FRAME_STACK, make_env
from runners.base.errors import UsageError
from runners.sweep import load_spec

REPO = Path(__file__).resolve().parent.parent
NUM_ENVS = 10  # the agents' default
PONG_ACTIONS = 6
SWEEPS = ("configs/sweeps/dqn_atari_rr.yaml", "configs/sweeps/rainbow_atari_rr.yaml")
AGENTS = {"dqn": dqn, "rainbow": rainbow}

FULL = dict(
    loop_gradient_steps=2000,
    bare_calls=200,
    bare_buffer=100_000,
    repeats=3,
    collect_steps=2000,
    ppo_iterations=6,
    buffer=1_000_000,
    memory_updates=100,
    audit_gradient_steps=(160, 480),
    audit_ppo_updates=(2, 4),
)
QUICK = dict(
    loop_gradient_steps=160,
    bare_calls=5,
    bare_buffer=2_000,
    repeats=1,
    collect_steps=40,
    ppo_iterations=2,
    buffer=20_000,
    memory_updates=3,
    audit_gradient_steps=(80, 160),
    audit_ppo_updates=(1, 2),
)


# ---------------------------------------------------------------- a replay buffer of Pong-sized frames
def atari_buffer(size: int, prioritized: bool, seed: int = 0):
    """The agents' frame-stacking buffer, full: ``size`` transitions of random 84x84 frames."""
    options = dict(alpha=0.5, beta=0.4) if prioritized else None
    buffer = make_replay_buffer(size, NUM_ENVS, FRAME_STACK, options)
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, size=(64, NUM_ENVS, FRAME_STACK, 84, 84), dtype=np.uint8)
    for i in range(size // NUM_ENVS):
        obs = frames[i % 64]
        buffer.add(
            Batch(
                obs=obs,
                act=rng.integers(0, PONG_ACTIONS, NUM_ENVS),
                rew=rng.choice([-1.0, 0.0, 1.0], NUM_ENVS).astype(np.float32),
                terminated=np.zeros(NUM_ENVS, bool),
                truncated=np.zeros(NUM_ENVS, bool),
                obs_next=obs,
                info=Batch(),
            )
        )
    buffer.hasnull()  # the NaN check of the fill is not what is measured
    return buffer


def build_algorithm(agent, device: torch.device, extra: dict | None = None):
    """The agent's Tianshou algorithm on Pong-shaped input, as its run builds it (its default options)."""
    args = agent.Args(**(extra or {}))
    factory = PluginOptimizerFactory(lambda params: agent_optimizer(args, params))
    algorithm, network = build_agent(
        agent.SPEC, args, (FRAME_STACK, 84, 84), PONG_ACTIONS, factory, device, target_period=1000
    )
    return args, algorithm, network


# ---------------------------------------------------------------- (a) the bare PyTorch update
def n_step_targets(buffer, indices: np.ndarray, gamma: float, n_step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(discounted n-step reward sums, index whose next observation bootstraps, bootstrap discount)."""
    rewards = np.zeros(len(indices), np.float32)
    discount = np.ones(len(indices), np.float32)
    alive = np.ones(len(indices), bool)
    current = last = indices
    for _ in range(n_step):
        rewards += alive * discount * buffer.rew[current]
        discount = np.where(alive, discount * gamma, discount)
        last = np.where(alive, current, last)
        alive &= ~buffer.done[current]
        current = buffer.next(current)
    return rewards, last, discount * ~buffer.terminated[last]


class BareUpdate:
    """One gradient step written in plain PyTorch: the same network, optimizer, batch size,
    replay buffer and sampling as the agent, no Tianshou machinery in between."""

    def __init__(self, agent, device: torch.device, buffer) -> None:
        self.args, algorithm, self.network = build_algorithm(agent, device)
        self.target = copy.deepcopy(self.network)
        self.optimizer = agent_optimizer(self.args, self.network.parameters())
        self.device, self.buffer, self.rainbow = device, buffer, agent is rainbow
        if self.rainbow:
            self.support = torch.linspace(self.args.v_min, self.args.v_max, self.args.num_atoms, device=device)
            self.delta_z = (self.args.v_max - self.args.v_min) / (self.args.num_atoms - 1)

    def frames(self, indices: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self.buffer.get(indices, "obs"), device=self.device)

    def __call__(self) -> None:
        indices = self.buffer.sample_indices(self.args.batch_size)
        rewards, last, discount = n_step_targets(self.buffer, indices, self.args.gamma, self.args.n_step)
        obs, next_obs = self.frames(indices), self.frames(self.buffer.next(last))
        actions = torch.as_tensor(self.buffer.act[indices], device=self.device).long()
        rewards, discount = (torch.as_tensor(x, device=self.device) for x in (rewards, discount))
        rows = torch.arange(len(indices), device=self.device)
        if self.rainbow:
            with torch.no_grad():
                next_action = (self.network(next_obs)[0] * self.support).sum(2).argmax(1)
                next_dist = self.target(next_obs)[0][rows, next_action]
                target_support = (rewards[:, None] + discount[:, None] * self.support).clamp(
                    self.args.v_min, self.args.v_max
                )
                projection = (
                    1 - (target_support[:, None, :] - self.support[None, :, None]).abs() / self.delta_z
                ).clamp(0, 1)
                target = (projection * next_dist[:, None, :]).sum(-1)
            weight = torch.as_tensor(self.buffer.get_weight(indices), device=self.device, dtype=torch.float32)
            cross_entropy = -(target * torch.log(self.network(obs)[0][rows, actions] + 1e-8)).sum(1)
            loss = (cross_entropy * weight).mean()
        else:
            with torch.no_grad():
                next_action = self.network(next_obs)[0].argmax(1)  # double Q: online argmax, target value
                returns = rewards + discount * self.target(next_obs)[0][rows, next_action]
            loss = (returns - self.network(obs)[0][rows, actions]).square().mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.rainbow:
            self.buffer.update_weight(indices, cross_entropy.detach())  # reads the errors back, as any PER loop must


def tianshou_update(algorithm, buffer, batch_size: int):
    def update() -> None:
        with policy_within_training_step(algorithm.policy):
            algorithm.update(sample_size=batch_size, buffer=buffer)

    return update


def rate_per_second(fn, calls: int, device: torch.device) -> float:
    fn()  # warm-up (allocator, cuDNN autotuning)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return calls / (time.perf_counter() - start)


def sweep_variants(agent_name: str) -> tuple[dict[str, dict], object]:
    sweep = load_spec(REPO / SWEEPS[list(AGENTS).index(agent_name)])  # reads the spec only
    variants = {}
    for run in sweep.runs:
        variants.setdefault(run.variant, {k: v for k, v in run.options.items() if k in ("replay_ratio", "wc_kappa")})
    return variants, sweep


def variant_flags(options: dict) -> list[str]:
    return [
        flag
        for key, value in options.items()
        if key != "replay_ratio"
        for flag in (f"--{key.replace('_', '-')}", str(value))
    ]


def part_a(device: torch.device, settings: dict) -> dict[str, dict[str, dict]]:
    print(
        "\n(a) Pong, Nature CNN, batch 32: gradient steps/s of the whole training loop against a bare PyTorch loop of the same update"
    )
    print(
        f"    loop: a {settings['loop_gradient_steps']}-gradient-step run after a 320-step warm-up, rates after its first log interval; "
        f"bare: {settings['bare_calls']} updates on a full {settings['bare_buffer']:,}-transition buffer; medians of {settings['repeats']}"
    )
    print(
        "| agent | variant | replay ratio | loop env steps/s | loop gradient steps/s | bare gradient steps/s | loop / bare |"
    )
    print("|---|---|---|---|---|---|---|")
    measured: dict[str, dict[str, dict]] = {}
    for name, agent in AGENTS.items():
        variants, _ = sweep_variants(name)
        bare = BareUpdate(agent, device, atari_buffer(settings["bare_buffer"], prioritized=agent is rainbow))
        runs: dict[str, list[dict]] = {variant: [] for variant in variants}
        bare_rates = []
        for _ in range(settings["repeats"]):  # interleaved, so drift hits every candidate alike
            for variant, options in variants.items():
                runs[variant].append(
                    agent_rates(
                        agent,
                        int(options["replay_ratio"]),
                        settings["loop_gradient_steps"],
                        ["--device", device.type, *variant_flags(options)],
                    )
                )
            bare_rates.append(rate_per_second(bare, settings["bare_calls"], device))
        bare_rate = statistics.median(bare_rates)
        measured[name] = {}
        for variant, options in variants.items():
            rates = {key: statistics.median(r[key] for r in runs[variant]) for key in ("sps", "gps")}
            measured[name][variant] = {**rates, **options}
            ratio = (
                f"{rates['gps'] / bare_rate:.2f}" if options["replay_ratio"] == 8 and "wc_kappa" not in options else ""
            )
            print(
                f"| {name} | {variant} | {options['replay_ratio']} | {rates['sps']:.1f} | {rates['gps']:.1f} | "
                f"{bare_rate:.1f} | {ratio} |",
                flush=True,
            )
    print("loop / bare: the RR 8 variant without WC against the bare update (the bare loop collects no env steps)")
    return measured


# ---------------------------------------------------------------- (b) the collector alone
def part_b(device: torch.device, settings: dict, loop_rates: dict | None) -> None:
    print(
        f"\n(b) collector alone: 10 Pong envs, {settings['collect_steps']} env steps per measurement, medians of {settings['repeats']}"
    )
    print(
        "| agent | policy on the device (env steps/s) | random actions (env steps/s) | policy / random | RR 8 loop / collector alone |"
    )
    print("|---|---|---|---|---|")
    for name, agent in AGENTS.items():
        args, algorithm, _ = build_algorithm(agent, device)
        algorithm.policy.set_eps_training(0.05)
        envs = DummyVectorEnv([make_env("ALE/Pong-v5", training=True) for _ in range(NUM_ENVS)])
        envs.seed(0)
        collector = Collector(
            algorithm, envs, make_replay_buffer(100_000, NUM_ENVS, FRAME_STACK), exploration_noise=True
        )
        collector.reset()
        for random_actions in (False, True):  # warm-up: first forward passes, first frames
            collector.collect(n_step=NUM_ENVS, random=random_actions)
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(settings["repeats"]):
            for random_actions in (False, True):
                start = time.perf_counter()
                collector.collect(n_step=settings["collect_steps"], random=random_actions)
                synchronize(device)
                rates[random_actions].append(settings["collect_steps"] / (time.perf_counter() - start))
        envs.close()
        policy, random_rate = statistics.median(rates[False]), statistics.median(rates[True])
        loop = loop_rates[name]["rr8_adam"]["sps"] / policy if loop_rates else float("nan")
        print(f"| {name} | {policy:.0f} | {random_rate:.0f} | {policy / random_rate:.2f} | {loop:.3f} |", flush=True)


# ---------------------------------------------------------------- (c) PPO: device against CPU
def part_c(device: torch.device, settings: dict, quick: bool) -> None:
    print(
        f"\n(c) PPO on Hopper-v5 (CleanRL settings, default diagnostics): --device {device.type} against --device cpu; "
        f"{settings['ppo_iterations']} updates of 2048 steps, rates after the first update, medians of {settings['repeats']}"
    )
    extra = ["--no-compile"] if quick else []  # the quick check skips the one-off compile; real runs compile
    choices = {"device": device.type, "cpu": "cpu"}  # the same flag twice under --device cpu: exercises the code only
    rates: dict[str, list[float]] = {label: [] for label in choices}
    for _ in range(settings["repeats"]):
        for label, choice in choices.items():
            rates[label].append(
                ppo_rates("Hopper-v5", settings["ppo_iterations"], ["--device", choice, *extra])["wall"]
            )
    on_device, on_cpu = statistics.median(rates["device"]), statistics.median(rates["cpu"])
    print(f"| --device {device.type} (env steps/s) | --device cpu (env steps/s) | {device.type} / cpu |")
    print("|---|---|---|")
    print(f"| {on_device:.0f} | {on_cpu:.0f} | {on_device / on_cpu:.2f} |")
    if device.type == "cuda":
        verdict = "confirms" if on_device <= on_cpu else "refutes"
        print(
            f"PPO's --device auto picks the CPU; this measurement {verdict} it (cuda / cpu = {on_device / on_cpu:.2f})."
        )


# ---------------------------------------------------------------- (d) memory with a 1M-transition buffer
def host_peak_reset() -> None:
    """Reset the process's peak resident set (Linux: VmHWM), so the next reading is this part's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def host_memory_gb() -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) * 1024 / 1e9 for key in ("VmRSS", "VmHWM")}


def part_d(device: torch.device, settings: dict) -> None:
    size = settings["buffer"]
    print(
        f"\n(d) peak memory: a full {size:,}-transition Pong buffer (frames stored once), the network, Adam and "
        f"{settings['memory_updates']} Tianshou updates of batch 32"
    )
    print(
        "| agent | buffer arrays (GB) | host peak (GB) | host resident after (GB) | GPU peak allocated (GB) | GPU peak reserved (GB) |"
    )
    print("|---|---|---|---|---|---|")
    for name, agent in AGENTS.items():
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        host_peak_reset()
        args, algorithm, _ = build_algorithm(agent, device)
        buffer = atari_buffer(size, prioritized=agent is rainbow)
        update = tianshou_update(algorithm, buffer, args.batch_size)
        for _ in range(settings["memory_updates"]):
            update()
        synchronize(device)
        host = host_memory_gb()
        gpu = (
            (torch.cuda.max_memory_allocated(device) / 1e9, torch.cuda.max_memory_reserved(device) / 1e9)
            if device.type == "cuda"
            else (float("nan"), float("nan"))
        )
        stored = sum(np.asarray(buffer._meta[key]).nbytes for key in buffer._meta.keys() if key != "info") / 1e9
        print(
            f"| {name} | {stored:.2f} | {host['VmHWM']:.2f} | {host['VmRSS']:.2f} | {gpu[0]:.2f} | {gpu[1]:.2f} |",
            flush=True,
        )
        del buffer, algorithm, update
    print("Host figures are the whole process (Python, torch, the buffer); GPU figures are torch's allocator.")


# ---------------------------------------------------------------- (e) GPU-hours of the Atari sweeps
def part_e(measured: dict[str, dict[str, dict]], device: torch.device) -> None:
    print(f"\n(e) estimated {device.type}-hours of the full-budget Atari sweeps, one run per device at a time:")
    print(
        "    hours = sum over the sweep's runs of total_timesteps / (3600 x env steps/s of the run's variant, measured in (a) on Pong)"
    )
    for name in AGENTS:
        _, sweep = sweep_variants(name)
        terms, total = [], 0.0
        for variant in dict.fromkeys(run.variant for run in sweep.runs):
            runs = [run for run in sweep.runs if run.variant == variant]
            steps = sum(run.options["total_timesteps"] for run in runs)
            sps = measured[name][variant]["sps"]
            hours = steps / (3600 * sps)
            total += hours
            terms.append(
                f"{variant}: {len(runs)} runs x {steps // len(runs):,} steps / (3600 x {sps:.1f}/s) = {hours:,.0f}"
            )
        print(f"{sweep.name}: " + "; ".join(terms) + f"; total {total:,.0f} {device.type}-hours")
    print(
        "Assumes the other games' emulators cost what Pong's does, and no other job shares the device; the default "
        "diagnostics fire every 50k env steps, outside these short runs."
    )


# ---------------------------------------------------------------- (f) host-device syncs per update
def audited_counts(device: torch.device, run, sizes: tuple[int, int]) -> Counter:
    """Host reads per extra unit of work: counts of a run of ``sizes[1]`` minus one of ``sizes[0]``."""
    counts = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as run_dir, host_read_audit(device) as reads:
            run(size, run_dir)
        counts.append(reads)
    extra = sizes[1] - sizes[0]
    return Counter(
        {site: (counts[1][site] - counts[0][site]) / extra for site in counts[1] if counts[1][site] != counts[0][site]}
    )


def print_audit(title: str, per_unit: Counter, unit: str) -> None:
    print(f"\n{title}")
    print(f"| call site | read | per {unit} |")
    print("|---|---|---|")
    for site, count in sorted(per_unit.items(), key=lambda item: -item[1]):
        where, _, method = site.partition(" ") if site.startswith("op ") else site.rpartition(" ")
        print(f"| {where} | {method} | {count:g} |")


def part_f(device: torch.device, settings: dict) -> None:
    print(
        f"\n(f) host reads of {device.type} tensors (each one a host-device sync on a GPU), per unit of work: the difference "
        "between two run lengths, so start-up and the end of the run cancel; diagnostics off ((f2) audits them). 'op' rows come "
        "from torch.profiler, with the operator that ran them: 'Python' is a .item() or float(tensor) of ours or Tianshou's; "
        "fused Adam and std read their scalars this way on a CPU only. Rows 'via torch/optim' read Adam's step counter, "
        "a CPU tensor even on a GPU run (no sync)."
    )
    ppo_short, ppo_long = settings["audit_ppo_updates"]

    def ppo_run(updates: int, run_dir: str) -> None:
        ppo_continuous.main(
            [
                "--env-id",
                "Hopper-v5",
                "--num-steps",
                "256",
                "--num-minibatches",
                "8",
                "--update-epochs",
                "2",
                "--total-timesteps",
                str(256 * updates),
                "--diagnostics-every",
                "0",
                "--heatmap-every",
                "0",
                "--no-compile",
                "--wc-kappa",
                "2",
                "--device",
                device.type,
                "--checkpoint-every",
                "1000",
                "--gradcov-samples",
                "32",
                "--run-dir",
                run_dir,
            ]
        )

    print_audit(
        "PPO + WC (16 minibatch steps per update)", audited_counts(device, ppo_run, (ppo_short, ppo_long)), "update"
    )
    for name, agent in AGENTS.items():

        def q_run(gradient_steps: int, run_dir: str, agent=agent) -> None:
            agent.main(
                [
                    "--env-id",
                    "CartPole-v1",
                    "--replay-ratio",
                    "8",
                    "--num-envs",
                    "10",
                    "--learning-starts",
                    "320",
                    "--total-timesteps",
                    str(320 + gradient_steps // 8),
                    "--log-every",
                    "10",
                    "--target-update-period",
                    "1000",
                    "--diagnostics-every",
                    "0",
                    "--heatmap-every",
                    "0",
                    "--wc-kappa",
                    "2",
                    "--device",
                    device.type,
                    "--probe-samples",
                    "32",
                    "--gradcov-samples",
                    "32",
                    "--checkpoint-every",
                    "1000000",
                    "--run-dir",
                    run_dir,
                ]
            )

        print_audit(
            f"{name} + WC at RR 8 (CartPole; the update path is the one Atari runs take)",
            audited_counts(device, q_run, settings["audit_gradient_steps"]),
            "gradient step",
        )
    print_diagnostics_audit(device)


def print_diagnostics_audit(device: torch.device) -> None:
    """Host reads of one call of each diagnostic on the Nature CNN (they run every 50k env steps by default)."""
    from torch.utils.tensorboard import SummaryWriter

    from agents.diagnostics import DiagnosticsLogger
    from agents.plugins.clipping import output_layer_names

    args, algorithm, network = build_algorithm(dqn, device)
    buffer = atari_buffer(1_000, prioritized=False)
    with tempfile.TemporaryDirectory() as run_dir, SummaryWriter(run_dir) as writer:
        logger = DiagnosticsLogger(writer, network, feature_layers=output_layer_names(network))
        probe = buffer.sample(64)[0]
        batch = dqn.td_batch(algorithm, buffer, 16)
        calls = {
            "log_representation": lambda: logger.log_representation(lambda: network(probe.obs), 0),
            "log_weights": lambda: logger.log_weights(0),
            "log_gradient_covariance (k = 16)": lambda: logger.log_gradient_covariance(
                dqn.per_sample_td_loss, batch, 0
            ),
        }
        print("\n(f2) diagnostics, one call each on the Nature CNN: host reads")
        print("| call | host reads | syncing ops |")
        print("|---|---|---|")
        for label, call in calls.items():
            with host_read_audit(device) as reads:
                call()
            ops = sum(count for site, count in reads.items() if site.startswith("op "))
            print(f"| {label} | {sum(reads.values()) - ops} | {ops} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--device", default="cuda", help="cuda (default) or cpu, to exercise the benchmark without a GPU"
    )
    parser.add_argument("--parts", default="a,b,c,d,e,f", help="which parts, e.g. a,e or f (e needs a)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny settings: checks that every part runs, measures nothing useful"
    )
    args = parser.parse_args(argv)
    if args.device not in ("cuda", "cpu"):
        raise UsageError(f"--device must be cuda or cpu, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "no CUDA device here (torch.cuda.is_available() is False); run this on a GPU machine, "
            "or pass --device cpu to exercise it"
        )
    parts = set(args.parts.split(","))
    if not parts <= set("abcdef"):
        raise UsageError(f"--parts takes letters from a,b,c,d,e,f, got {args.parts!r}")
    if "e" in parts and "a" not in parts:
        raise UsageError("part e (GPU-hours) uses part a's measured rates; add a to --parts")
    device = torch.device(args.device)
    settings = QUICK if args.quick else FULL
    torch.set_num_threads(1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"torch {torch.__version__}, device {device.type} ({name}), 1 CPU thread{', QUICK settings' if args.quick else ''}"
    )
    measured = part_a(device, settings) if "a" in parts else None
    if "b" in parts:
        part_b(device, settings, measured)
    if "c" in parts:
        part_c(device, settings, args.quick)
    if "d" in parts:
        part_d(device, settings)
    if "e" in parts:
        part_e(measured, device)
    if "f" in parts:
        part_f(device, settings)


if __name__ == "__main__":
    from runners.base.console import run_and_report

    run_and_report(main)
