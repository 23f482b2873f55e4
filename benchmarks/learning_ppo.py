"""Learning check: PPO vs PPO + WC (kappa 2) on Hopper-v5, 300k steps, 2 seeds.

Trains the four runs (two at a time, one per core) unless they are already complete
in --root, then plots episodic return against steps (mean over seeds, each seed's
curve faint) and prints the mean return of each run's last 20 training episodes.
Usage: python -m benchmarks.learning_ppo [--root runs/learning_ppo] [--steps 300000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

VARIANTS = {"Adam": [], "Adam+WC (kappa 2)": ["--wc-kappa", "2"]}
SEEDS = (1, 2)


def train(run_dir: Path, steps: int, extra: list[str], seed: int) -> None:
    command = [sys.executable, "-m", "runners.cli", "train", "ppo", "--env-id", "Hopper-v5", "--total-timesteps", str(steps),
               "--seed", str(seed), "--run-dir", str(run_dir), *extra]
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)


def returns(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload().Scalars("charts/episodic_return")
    return np.array([e.step for e in events]), np.array([e.value for e in events])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("runs/learning_ppo"))
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures" / "ppo_hopper_learning.png")
    args = parser.parse_args()
    jobs = [(args.root / name.split(" ")[0].replace("+", "_").lower() / f"seed_{seed}", extra, seed) for name, extra in VARIANTS.items() for seed in SEEDS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda job: train(job[0], args.steps, job[1], job[2]), jobs))

    figure = Figure(figsize=(6, 4), dpi=120)
    axes = figure.add_subplot()
    grid = np.linspace(0, args.steps, 61)
    print("| variant | seed | mean return, last 20 episodes |")
    print("|---|---|---|")
    for (name, _), colour in zip(VARIANTS.items(), ("tab:blue", "tab:red")):
        curves = []
        for seed in SEEDS:
            steps, values = returns(args.root / name.split(" ")[0].replace("+", "_").lower() / f"seed_{seed}")
            print(f"| {name} | {seed} | {values[-20:].mean():.0f} |")
            # smooth each seed with a 20-episode moving mean, then put it on a common step grid
            smooth = np.convolve(values, np.ones(20) / 20, mode="valid")
            curve = np.interp(grid, steps[19:], smooth, left=np.nan)
            axes.plot(grid, curve, color=colour, alpha=0.25, linewidth=1)
            curves.append(curve)
        defined = ~np.isnan(curves).all(0)
        axes.plot(grid[defined], np.nanmean(np.array(curves)[:, defined], 0), color=colour, label=name, linewidth=2)
    axes.set_xlabel("environment steps")
    axes.set_ylabel("episodic return (20-episode mean)")
    axes.set_title(f"PPO on Hopper-v5, {len(SEEDS)} seeds")
    axes.legend()
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(args.out))
    print(f"\nfigure: {args.out}")


if __name__ == "__main__":
    main()
