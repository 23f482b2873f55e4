"""PPO throughput relative to the environment itself, measured side by side in one process.

Raw rate: the same wrapped vector env (CleanRL's wrapper stack, SAME_STEP autoreset)
driven by random actions. Agent rate: env steps per second of the PPO agent from the
end of its first update to the end of its last (rollouts, updates, logging and
diagnostics included; start-up, the one-off compile and the end-of-run extras not).

Both are single-threaded, so rates are reported per CPU-second of this process as well
as per wall-clock second: CPU time does not move when the host steals cycles, which on
shared machines swings wall-clock rates by tens of percent between two measurements.
Usage: python -m benchmarks.bench_ppo [--env-id Hopper-v5] [--iterations 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import contextmanager

import torch
from torch.utils.tensorboard import SummaryWriter

from agents import ppo_continuous
from agents.diagnostics import DiagnosticsLogger
from agents.plugins.clipping import WeightClipping
from envs.continuous import make_vector_env

VARIANTS = {
    "PPO, no WC, diagnostics off": ["--diagnostics-every", "0", "--heatmap-every", "0"],
    "PPO + WC, diagnostics off": ["--wc-kappa", "2", "--diagnostics-every", "0", "--heatmap-every", "0"],
    "PPO, no WC, diagnostics default": [],
    "PPO + WC, diagnostics default": ["--wc-kappa", "2"],
}
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def raw_env_rates(env_id: str, steps: int) -> dict[str, float]:
    envs = make_vector_env(env_id, 1, 0.99)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    start = {name: clock() for name, clock in CLOCKS.items()}
    for _ in range(steps):
        envs.step(envs.action_space.sample())
    rates = {name: steps / (clock() - start[name]) for name, clock in CLOCKS.items()}
    envs.close()
    return rates


@contextmanager
def timing(owner, method: str, log: list):
    """Record (clock readings, seconds) of every call of ``owner.method``."""
    original = getattr(owner, method)

    def wrapper(*args, **kwargs):
        before = {name: clock() for name, clock in CLOCKS.items()}
        try:
            return original(*args, **kwargs)
        finally:
            log.append((before, {name: clock() - before[name] for name, clock in CLOCKS.items()}))

    setattr(owner, method, wrapper)
    try:
        yield
    finally:
        setattr(owner, method, original)


def run_agent(env_id: str, iterations: int, extra: list[str]) -> dict:
    """Agent rates per clock, and the share of loop time spent in the WC clamp and in diagnostics."""
    iteration_ends, clamps, diagnostics = [], [], []
    original_add_scalar = SummaryWriter.add_scalar

    def add_scalar(self, tag, value, step=None, *args, **kwargs):
        if tag == "charts/SPS":  # logged once at the end of every update
            iteration_ends.append((step, {name: clock() for name, clock in CLOCKS.items()}))
        return original_add_scalar(self, tag, value, step, *args, **kwargs)

    SummaryWriter.add_scalar = add_scalar
    try:
        with (
            tempfile.TemporaryDirectory() as run_dir,
            timing(WeightClipping, "clip_now", clamps),
            timing(DiagnosticsLogger, "log_representation", diagnostics),
            timing(DiagnosticsLogger, "log_weights", diagnostics),
            timing(DiagnosticsLogger, "log_gradient_covariance", diagnostics),
            timing(DiagnosticsLogger, "log_clipping", diagnostics),
        ):
            ppo_continuous.main(
                ["--env-id", env_id, "--total-timesteps", str(2048 * iterations), "--run-dir", run_dir, *extra]
            )
    finally:
        SummaryWriter.add_scalar = original_add_scalar
    (first_step, first), (last_step, last) = iteration_ends[0], iteration_ends[-1]
    result = {}
    for name in CLOCKS:
        window = last[name] - first[name]
        result[name] = (last_step - first_step) / window
        inside = lambda log: sum(spent[name] for before, spent in log if first[name] <= before[name] <= last[name])  # noqa: E731
        result[f"wc_share_{name}"] = inside(clamps) / window
        result[f"diagnostics_share_{name}"] = inside(diagnostics) / window
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env-id", default="Hopper-v5")
    parser.add_argument("--iterations", type=int, default=8, help="PPO updates (2048 steps each) per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    raw: list[dict] = []
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):  # interleaved, so drift hits every variant alike
        for name, extra in VARIANTS.items():
            raw.append(raw_env_rates(args.env_id, 4096))
            runs[name].append(run_agent(args.env_id, args.iterations, extra))
    raw_rate = {clock: statistics.median(r[clock] for r in raw) for clock in CLOCKS}
    print(
        f"\n{args.env_id}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.repeats} repeats, medians; "
        f"raw wrapped env with random actions: {raw_rate['cpu']:.0f} steps per CPU-second, {raw_rate['wall']:.0f} steps/s wall-clock"
    )
    print(
        "| variant | agent steps per CPU-s | agent / raw env (CPU time) | agent steps/s wall | agent / raw env (wall) |"
    )
    print("|---|---|---|---|---|")
    rate = {}
    for name in VARIANTS:
        rate[name] = {clock: statistics.median(r[clock] for r in runs[name]) for clock in CLOCKS}
        print(
            f"| {name} | {rate[name]['cpu']:.0f} | {rate[name]['cpu'] / raw_rate['cpu']:.1%} | "
            f"{rate[name]['wall']:.0f} | {rate[name]['wall'] / raw_rate['wall']:.1%} |"
        )
    full = runs["PPO + WC, diagnostics default"]
    print(
        f"\nShare of the training loop's CPU time in one run (PPO + WC, default diagnostics): "
        f"WC clamp {statistics.median(r['wc_share_cpu'] for r in full):.2%}, "
        f"diagnostics {statistics.median(r['diagnostics_share_cpu'] for r in full):.2%}"
    )
    base = rate["PPO, no WC, diagnostics off"]["cpu"]
    print(
        f"Throughput cost from the variant rates (CPU time): WC {1 - rate['PPO + WC, diagnostics off']['cpu'] / base:.1%}, "
        f"diagnostics {1 - rate['PPO, no WC, diagnostics default']['cpu'] / base:.1%}"
    )


if __name__ == "__main__":
    main()
