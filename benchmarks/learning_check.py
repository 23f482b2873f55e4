"""Learning checks, 2 seeds per variant:

* ``ppo``: PPO on Hopper-v5, 300k steps, Adam vs Adam + WC (kappa 2);
* ``dqn``: DQN on CartPole-v1 (preset dqn_cartpole: 2 x 64 ReLU MLP, replay ratio 1),
  100k steps, Adam vs Adam + WC (kappa 2);
* ``interventions``: the same DQN with the other plug-ins: successive L2 Init and
  singular-value penalty (delta 1.25, Teo et al.'s best), LayerNorm, last-layer reset at
  every target update.

Trains the runs (two at a time, one per core) unless they are already complete in
--root, then plots episodic return against steps (mean over seeds, each seed's curve
faint) and prints the mean return of each run's last 20 training episodes.
Usage: python -m benchmarks.learning_check ppo|dqn|interventions [--root DIR]
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

WC_VARIANTS = {"Adam": [], "Adam+WC (kappa 2)": ["--wc-kappa", "2"]}
SEEDS = (1, 2)
CHECKS = {
    "ppo": {
        "command": ["ppo", "--env-id", "Hopper-v5", "--total-timesteps", "300000"],
        "steps": 300_000,
        "title": "PPO on Hopper-v5",
        "figure": "ppo_hopper_learning.png",
        "variants": WC_VARIANTS,
    },
    "dqn": {
        "command": ["dqn", "--config", "dqn_cartpole"],
        "steps": 100_000,
        "title": "DQN on CartPole-v1, replay ratio 1",
        "figure": "dqn_cartpole_learning.png",
        "variants": WC_VARIANTS,
    },
    "interventions": {
        "command": ["dqn", "--config", "dqn_cartpole"],
        "steps": 100_000,
        "title": "DQN on CartPole-v1 with the plug-ins",
        "figure": "dqn_cartpole_interventions.png",
        "variants": {
            "Adam": [],
            "L2_Init delta 1.25": ["--reg", "l2_init", "--reg-delta", "1.25"],
            "singular delta 1.25": ["--reg", "singular", "--reg-delta", "1.25"],
            "LayerNorm": ["--layer-norm"],
            "reset_last_layer at target updates": ["--reset-last-layer-every", "target"],
        },
    },
}
COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange")


def run_name(variant: str) -> str:
    return variant.split(" ")[0].replace("+", "_").lower()


def train(check: dict, run_dir: Path, extra: list[str], seed: int) -> None:
    command = [
        sys.executable,
        "-m",
        "runners.cli",
        "train",
        *check["command"],
        "--seed",
        str(seed),
        "--run-dir",
        str(run_dir),
        *extra,
    ]
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)


def returns(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload().Scalars("charts/episodic_return")
    return np.array([e.step for e in events]), np.array([e.value for e in events])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("check", choices=sorted(CHECKS))
    parser.add_argument("--root", type=Path, default=None, help="default: runs/learning_<check>")
    args = parser.parse_args()
    check = CHECKS[args.check]
    root = args.root or Path(f"runs/learning_{args.check}")
    out = Path(__file__).parent / "figures" / check["figure"]
    variants = check["variants"]
    jobs = [(root / run_name(name) / f"seed_{seed}", extra, seed) for name, extra in variants.items() for seed in SEEDS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda job: train(check, *job), jobs))

    figure = Figure(figsize=(6, 4), dpi=120)
    axes = figure.add_subplot()
    grid = np.linspace(0, check["steps"], 61)
    print("| variant | seed | mean return, last 20 episodes |")
    print("|---|---|---|")
    for (name, _), colour in zip(variants.items(), COLOURS):
        curves = []
        for seed in SEEDS:
            steps, values = returns(root / run_name(name) / f"seed_{seed}")
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
    axes.set_title(f"{check['title']}, {len(SEEDS)} seeds")
    axes.legend()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(out))
    print(f"\nfigure: {out}")


if __name__ == "__main__":
    main()
