"""Checkpoint size and write time with the replay buffer in it (the default, for exact resume),
per observation family, against the env time between two checkpoints at the presets' rates.

    python benchmarks/bench_checkpoint.py [--transitions 100000]

Each buffer is the Q-learning run's own (``make_replay_buffer``: frame-once storage for Atari),
full, with observations of the family's shape and dtype; the write is the run's own
(``atomic_torch_save``: serialise, write a temporary file, fsync, rename).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tianshou.data import Batch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.qlearning.replay import make_replay_buffer
from runners.base.files import atomic_torch_save  # noqa: E402

# (obs shape, dtype, frame stack, prioritized, env steps/s of a run at its preset, checkpoint interval in env steps)
FAMILIES = {
    "CartPole (4 floats), DQN": ((4,), np.float32, 1, False, 880, 50_000),
    "MinAtar Breakout (4x10x10 bool), DQN RR 8": ((4, 10, 10), bool, 1, False, 50, 100_000),
    "MinAtar Seaquest (10x10x10 bool), Rainbow RR 8 (PER)": ((10, 10, 10), bool, 1, True, 18, 100_000),
    "Atari (84x84 uint8 frames, stack 4), DQN RR 1": ((4, 84, 84), np.uint8, 4, False, 120, 100_000),
}


def filled_buffer(shape, dtype, stack: int, prioritized: bool, transitions: int):
    buffer = make_replay_buffer(transitions, 1, stack, dict(alpha=0.5, beta=0.5) if prioritized else None, seed=0)
    rng = np.random.default_rng(0)
    chunk = 1000
    for start in range(0, transitions, chunk):
        for _ in range(chunk):
            obs = (rng.random((1, *shape)) < 0.1) if dtype is bool else rng.integers(0, 255, (1, *shape)).astype(dtype)
            buffer.add(
                Batch(
                    obs=obs.astype(dtype),
                    act=[0],
                    rew=[0.0],
                    terminated=[False],
                    truncated=[False],
                    obs_next=obs.astype(dtype),
                    info=Batch(),
                ),
                buffer_ids=[0],
            )
    return buffer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=100_000)
    args = parser.parse_args()
    print("| observations | buffer | checkpoint size | write time | env time between checkpoints | share |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        for name, (shape, dtype, stack, prioritized, rate, interval) in FAMILIES.items():
            buffer = filled_buffer(shape, dtype, stack, prioritized, args.transitions)
            path = Path(directory) / "checkpoint.pt"
            times = []
            for _ in range(3):
                start = time.perf_counter()
                atomic_torch_save({"buffer": buffer}, path)
                times.append(time.perf_counter() - start)
            seconds = float(np.median(times))
            between = interval / rate
            print(
                f"| {name} | {args.transitions:,} | {path.stat().st_size / 2**20:,.0f} MiB | {seconds:.2f} s "
                f"| {between:,.0f} s | {100 * seconds / between:.2f}% |",
                flush=True,
            )


if __name__ == "__main__":
    main()
