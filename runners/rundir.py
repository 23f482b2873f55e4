"""Run directories: resolved config, checkpoints, final model and a status marker.

Layout of ``<run_dir>``: ``config.json`` (the resolved options), TensorBoard event
files, ``checkpoint.pt`` (periodic, for resuming), ``model.pt`` (final), ``status.json``
(``running`` / ``complete`` / ``failed`` with the error), ``gradcov/`` (matrices, PNGs).
Every file is written through a temporary file and a rename, so a kill -9 at any
moment leaves the previous version intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch

from runners.errors import UsageError
from runners.files import atomic_torch_save, atomic_write_text

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
STATUS_FILE = "status.json"


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def read_status(path: str | Path) -> dict | None:
    """The status marker of a run directory, or None if the run never started."""
    try:
        return json.loads((Path(path) / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class RunDirectory:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def bind_config(self, config: dict[str, Any], free_keys: set[str] = frozenset()) -> bool:
        """Write the config, or check it against the saved one; True if one was saved before.

        ``free_keys`` may differ between the original run and a resume (e.g. how
        often to checkpoint); every other difference is refused, naming the keys.
        """
        config = _jsonable(config)
        saved_file = self.path / CONFIG_FILE
        if not saved_file.exists():
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(saved_file, json.dumps(config, indent=2, sort_keys=True) + "\n")
            return False
        saved = json.loads(saved_file.read_text())
        differing = sorted(k for k in set(saved) | set(config) if k not in free_keys and saved.get(k, "<absent>") != config.get(k, "<absent>"))
        if differing:
            details = "; ".join(f"{k}: {saved.get(k, '<absent>')!r} in the run directory, {config.get(k, '<absent>')!r} now" for k in differing)
            raise UsageError(f"run directory {self.path} was made with a different config ({details}); use a new --run-dir")
        return True

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict | None:
        file = self.path / CHECKPOINT_FILE
        if not file.exists():
            return None
        # Our own file; it holds RNG states and numpy arrays, which weights_only refuses.
        return torch.load(file, map_location=map_location, weights_only=False)

    def save_checkpoint(self, state: dict) -> None:
        atomic_torch_save(state, self.path / CHECKPOINT_FILE)

    def save_model(self, state: dict) -> None:
        atomic_torch_save(state, self.path / MODEL_FILE)

    def set_status(self, state: str, **details: Any) -> None:
        record = {"state": state, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid(), **details}
        atomic_write_text(self.path / STATUS_FILE, json.dumps(_jsonable(record), indent=2) + "\n")

    def status(self) -> dict | None:
        return read_status(self.path)


def rng_state() -> dict:
    """Every random stream a run draws from, for checkpoints."""
    import random

    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    # Only a process that has used CUDA has drawn from its generators; asking otherwise would
    # start a CUDA context (and take GPU memory) in every CPU run on a GPU machine.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    import random

    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    # A checkpoint moves between machines: CUDA states are restored on the devices present
    # (none on a CPU machine; a CPU checkpoint leaves the seeded CUDA generators as they are).
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)


@contextlib.contextmanager
def isolated_rng(seed: int):
    """Run a block on its own random streams, seeded with ``seed``, and give every stream
    back exactly as it was: probes and perturbations then leave the run's draws untouched
    and are themselves reproducible."""
    import random

    import numpy as np

    saved = rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds CUDA too
    try:
        yield
    finally:
        restore_rng_state(saved)


class StopRequest:
    """Turns SIGTERM and SIGUSR1 (sent by schedulers before a time limit) into a flag the
    training loop polls, so it can checkpoint and exit cleanly instead of dying mid-write."""

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopRequest:
        import signal

        for name in self.SIGNALS:
            number = getattr(signal, name)
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame) -> None:
        import signal

        self.signal_name = signal.Signals(number).name

    def __exit__(self, *exc) -> None:
        import signal

        for number, handler in self._previous.items():
            signal.signal(number, handler)

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


def execute_run(path: str | Path, config: dict[str, Any], free_keys: set[str], train) -> Path:
    """Claim a run directory and run ``train(run, writer, checkpoint)`` in it.

    A complete run is not repeated; an interrupted one resumes from its checkpoint, and
    the TensorBoard writer's purge_step drops the events its previous attempt logged
    after that checkpoint (an agent logs everything at a step before checkpointing it).
    The outcome lands in status.json: the agent marks completion, this marks failure.
    """
    from torch.utils.tensorboard import SummaryWriter

    run = RunDirectory(path)
    resuming = run.bind_config(config, free_keys=free_keys)
    if resuming and (run.status() or {}).get("state") == "complete":
        print(f"{run.path} is already complete; nothing to do")
        return run.path
    checkpoint = run.load_checkpoint()
    try:
        with SummaryWriter(str(run.path), purge_step=checkpoint["global_step"] + 1 if checkpoint else None) as writer:
            train(run, writer, checkpoint)
    except BaseException as error:
        run.set_status("failed", error=f"{type(error).__name__}: {error}")
        raise
    return run.path
