"""Start-up: `clipzoo train <agent> --help` against importing torch and gymnasium alone, side by
side, interleaved, medians of 5 (target: within 1.3x); and the commands that only read runs
(`table`, `plot`), which load neither torch nor, without --profile, rliable.

    python benchmarks/bench_startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

CANDIDATES = {
    "python -c 'import torch, gymnasium'": [sys.executable, "-c", "import torch, gymnasium"],
    "clipzoo train ppo --help": [sys.executable, "-m", "runners.cli", "train", "ppo", "--help"],
    "clipzoo train dqn --help": [sys.executable, "-m", "runners.cli", "train", "dqn", "--help"],
    "clipzoo table --help": [sys.executable, "-m", "runners.cli", "table", "--help"],
    "clipzoo plot --help": [sys.executable, "-m", "runners.cli", "plot", "--help"],
}


def main(repeats: int = 5) -> None:
    seconds: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    for _ in range(repeats):
        for name, command in CANDIDATES.items():
            start = time.perf_counter()
            subprocess.run(command, cwd=Path(__file__).resolve().parent.parent, check=True, capture_output=True)
            seconds[name].append(time.perf_counter() - start)
    base = statistics.median(seconds["python -c 'import torch, gymnasium'"])
    print("| command | median seconds | / importing torch and gymnasium |\n|---|---|---|")
    for name, values in seconds.items():
        print(f"| `{name}` | {statistics.median(values):.2f} | {statistics.median(values) / base:.2f}x |")


if __name__ == "__main__":
    main()
