"""The error types the command line reports in one line, never with a traceback."""

import signal
from pathlib import Path


class UsageError(ValueError):
    """Bad input from the user (unknown env id, bad option value, mismatched run directory)."""


def require_at_least(args, minimum: int, *names: str) -> None:
    """Refuse in one line the first of the options ``names`` (fields of ``args``) below ``minimum``."""
    for name in names:
        value = getattr(args, name)
        if value < minimum:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")


class RunInterrupted(Exception):
    """A run stopped by a signal after checkpointing; the command exits with 128 + the signal number."""

    def __init__(self, signal_name: str, path: Path) -> None:
        super().__init__(f"{signal_name}: checkpointed; rerun with --run-dir {path} to resume")
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        return 128 + int(getattr(signal, self.signal_name, signal.SIGTERM))
