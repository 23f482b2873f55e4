"""Start-up: `clipzoo train <agent> --help` against importing torch and gymnasium alone, side by
side, interleaved, medians of 5 (target: within 1.3x); the commands that only read runs
(`table`, `plot`), which load neither torch nor, without --profile, rliable; and a DQN sweep's
dry run, which checks every run's options before it prints their commands.

    python benchmarks/bench_startup.py                      # this checkout
    python benchmarks/bench_startup.py --against OTHER_DIR  # and another checkout, interleaved
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASELINE = "python -c 'import torch, gymnasium'"


def candidates(scratch: Path) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "runners.cli"]
    return {
        BASELINE: [sys.executable, "-c", "import torch, gymnasium"],
        "clipzoo train ppo --help": [*cli, "train", "ppo", "--help"],
        "clipzoo train dqn --help": [*cli, "train", "dqn", "--help"],
        "clipzoo table --help": [*cli, "table", "--help"],
        "clipzoo plot --help": [*cli, "plot", "--help"],
        "clipzoo sweep configs/sweeps/tiny_dqn.yaml --dry-run": [
            *cli,
            "sweep",
            "configs/sweeps/tiny_dqn.yaml",
            "--dry-run",
            "--dir",
            str(scratch / "sweep"),
        ],
    }


def main(repeats: int = 5) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout, timed interleaved with this one")
    checkouts = {"here": REPO}
    against = parser.parse_args().against
    if against:
        checkouts["against"] = against.resolve()
    with tempfile.TemporaryDirectory() as scratch:
        commands = candidates(Path(scratch))
        seconds = {(where, name): [] for where in checkouts for name in commands}
        for _ in range(repeats):
            for name, command in commands.items():
                for where, checkout in checkouts.items():
                    start = time.perf_counter()
                    subprocess.run(command, cwd=checkout, check=True, capture_output=True)
                    seconds[(where, name)].append(time.perf_counter() - start)
    base = statistics.median(seconds[("here", BASELINE)])
    # every ratio is to this checkout's baseline: the same import, so the two columns compare directly
    columns = " | ".join(f"{where}: seconds | {where}: / importing torch and gymnasium" for where in checkouts)
    print(f"| command | {columns} |\n|---|{'---|---|' * len(checkouts)}")
    for name in commands:
        cells = []
        for where in checkouts:
            median = statistics.median(seconds[(where, name)])
            cells.append(f"{median:.2f} | {median / base:.2f}x")
        print(f"| `{name}` | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
