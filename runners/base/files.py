"""Crash-safe file writes: write a temporary file beside the target, fsync, then rename.

A reader (or a rerun after kill -9) sees either the old file or the new one, never half.
A write that fails (a full disk, a read-only directory) leaves the old file and is
reported in one line naming the file.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from runners.base.errors import UsageError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# mkstemp creates 0600 files; give them the permissions an ordinary open() would.
FILE_MODE = 0o666 & ~_umask()


class WriteError(UsageError):
    """A file could not be written (full disk, permissions); the message names it."""


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> Path:
    """``durable=False`` skips the fsync: still never half a file, but a power cut may keep the
    previous version (for frequent, disposable writes such as progress reports)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise WriteError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        os.fchmod(descriptor, FILE_MODE)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {error.strerror or error}; the previous version is intact") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode(), durable)


def atomic_torch_save(obj, path: str | Path) -> Path:
    import torch  # here, not at the top: the commands that only read runs (table, plot, status) never load torch

    buffer = io.BytesIO()
    torch.save(obj, buffer, pickle_protocol=5)  # protocol 5 writes numpy arrays (replay buffers) without extra copies
    return atomic_write_bytes(path, buffer.getvalue())
