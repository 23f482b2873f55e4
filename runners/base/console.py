"""What a run prints and how a command ends: one line for bad input, the exit code of a stop,
counts in words and the TensorBoard command. The base layer: agents import it, never ``runners.cli``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from runners.base.errors import RunInterrupted, UsageError


def run_and_report(entry: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Run an entry point; bad input prints one line and exits 2, never a traceback."""
    try:
        entry(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except RunInterrupted as stop:  # checkpointed; not a success for scripts and schedulers
        print(stop, file=sys.stderr)
        raise SystemExit(stop.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:  # `clipzoo sweep status DIR | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    except OSError as error:  # a path the user gave that cannot be read or written
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        raise SystemExit(2) from None


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def tensorboard_command(log_dir: str | Path) -> str:
    """The command that shows ``log_dir`` in TensorBoard, with this environment's ``tensorboard``
    (a bare ``tensorboard`` is not on PATH unless the venv is activated)."""
    installed = Path(sys.executable).parent / "tensorboard"
    program = str(installed) if installed.exists() else f"{sys.executable} -m tensorboard.main"
    return f"{program} --logdir {log_dir}"
