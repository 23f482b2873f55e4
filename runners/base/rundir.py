"""Run directories: resolved config, checkpoints, final model and a status marker.

Layout of ``<run_dir>``: ``config.json`` (the resolved options), TensorBoard event
files, ``checkpoint.pt`` (periodic, for resuming), ``model.pt`` (final), ``status.json``
(``running`` / ``complete`` / ``interrupted`` / ``failed`` with the error, and who runs
it: host, pid, start time, SLURM job), ``attempts.json`` (every attempt at the run: the
command, the code's commit and whether its tree was clean, the step it resumed from,
whether that resume was exact, and how it ended), ``run.lock`` (held by the training
process), ``gradcov/`` (matrices, PNGs) and, with ``--track``, ``wandb/`` and
``wandb_run_id`` (runners/base/tracking.py). Every file is written through a temporary file
and a rename, so a kill -9 at any moment leaves the previous version intact; the
temporary file such a kill leaves behind is removed by the next attempt.

One run directory, one trainer: the training process holds an OS lock (``flock``) on
``run.lock`` for as long as it runs, and a second one is refused naming the holder. The
OS drops the lock when the holder dies, even by kill -9, so a ``running`` marker whose
lock is free (or whose SLURM job has left the queue) is a dead run: ``effective_state``
reports it as ``interrupted``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runners.base.errors import RunInterrupted, UsageError
from runners.base.files import atomic_torch_save, atomic_write_text

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
STATUS_FILE = "status.json"
ATTEMPTS_FILE = "attempts.json"
LOCK_FILE = "run.lock"


def code_version() -> dict:
    """The commit of the code this process runs and whether its tree has uncommitted changes
    to tracked files (None where the code is not a git checkout)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        changes = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "clean": None}
    if commit.returncode or changes.returncode:
        return {"commit": None, "clean": None}
    return {"commit": commit.stdout.strip(), "clean": not changes.stdout.strip()}


def read_attempts(path: str | Path) -> list[dict]:
    try:
        return json.loads((Path(path) / ATTEMPTS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return []


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
    except (OSError, json.JSONDecodeError):
        return None


def slurm_job_of_this_process() -> str | None:
    """``<array job>_<task>`` (or the job id) when running inside a SLURM job."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def lock_is_held(path: str | Path) -> bool | None:
    """Whether a live process holds the run directory's lock; None when there is no lock file."""
    try:
        descriptor = os.open(Path(path) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # closing drops a shared lock we may have taken
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def effective_state(path: str | Path, status: dict | None, slurm_job_alive=lambda job: None) -> dict | None:
    """The status marker, with a ``running`` run whose process is gone reported as ``interrupted``.

    Gone means: its lock is free and it ran on this host (the lock is the OS's word, pid
    reuse cannot fool it; without a lock file, the pid is checked), or it ran in a SLURM
    job that ``slurm_job_alive(job)`` says has left the queue (None: cannot tell).
    """
    if not status or status.get("state") != "running":
        return status
    held = lock_is_held(path)
    if held:
        return status
    gone = None
    if status.get("host") == socket.gethostname():
        gone = held is False or not _pid_alive(int(status.get("pid", 0)))
    elif status.get("slurm_job"):
        alive = slurm_job_alive(status["slurm_job"])
        gone = None if alive is None else not alive
    if not gone:
        return status
    where = (
        f"SLURM job {status['slurm_job']}"
        if status.get("slurm_job")
        else f"process {status.get('pid')} on {status.get('host')}"
    )
    return {**status, "state": "interrupted", "stale": f"{where} is gone (killed?)"}


def describe_holder(status: dict | None) -> str:
    if not status:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status["started"])) if status.get("started") else "?"
    job = f", SLURM job {status['slurm_job']}" if status.get("slurm_job") else ""
    return f"pid {status.get('pid')} on {status.get('host')}{job} (started {started})"


class RunDirectory:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config: dict | None = None
        self.free_keys: set[str] = set()
        self.started: float | None = None
        self._lock: int | None = None
        self._attempts: list[dict] | None = None
        self._running: dict | None = None  # the last "running" record, which progress reports extend

    def check_usable(self) -> None:
        """Refuse a path that cannot be a run directory, in one line naming it."""
        for parent in [self.path, *self.path.parents]:
            if parent.exists():
                if not parent.is_dir():
                    raise UsageError(
                        f"--run-dir {self.path}: {parent} exists and is not a directory; give a directory path"
                    )
                if not os.access(parent, os.W_OK | os.X_OK):
                    raise UsageError(
                        f"--run-dir {self.path}: {parent} is not writable; give a directory you can write to"
                    )
                return

    @contextlib.contextmanager
    def claim(self):
        """Hold the run directory's lock while the block runs; refuse if a live process holds it."""
        self.check_usable()
        self.path.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        # a status reader probes the lock for an instant; try a little before giving up
        for attempt in range(10):
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.1)
        else:
            os.close(descriptor)
            raise UsageError(
                f"run directory {self.path} is being trained by {describe_holder(self.status())}; "
                f"wait for it, or stop it first (a second trainer would corrupt the run)"
            )
        self._lock, self.started = descriptor, time.time()
        try:
            yield self
        finally:
            self._lock = None
            os.close(descriptor)  # releases the lock

    def bind_config(self, config: dict[str, Any], free_keys: set[str] = frozenset()) -> bool:
        """Write the config, or check it against the saved one; True if one was saved before.

        ``free_keys`` may differ between the original run and a resume (e.g. how
        often to checkpoint); every other difference is refused, naming the keys.
        """
        config = _jsonable(config)
        self.config, self.free_keys = config, set(free_keys)
        saved_file = self.path / CONFIG_FILE
        if not saved_file.exists():
            self.check_usable()
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(saved_file, json.dumps(config, indent=2, sort_keys=True) + "\n")
            return False
        try:
            saved = json.loads(saved_file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UsageError(f"{saved_file} cannot be read ({error}); use a new --run-dir") from None
        differing = self._differing(saved, config)
        if differing:
            details = "; ".join(
                f"{k}: {saved.get(k, '<absent>')!r} in the run directory, {config.get(k, '<absent>')!r} now"
                for k in differing
            )
            raise UsageError(
                f"run directory {self.path} was made with a different config ({details}); use a new --run-dir"
            )
        return True

    def _differing(self, saved: dict, config: dict) -> list[str]:
        return sorted(
            k
            for k in set(saved) | set(config)
            if k not in self.free_keys and saved.get(k, "<absent>") != config.get(k, "<absent>")
        )

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict | None:
        """The checkpoint, refused in one line if it cannot be read or belongs to another run."""
        file = self.path / CHECKPOINT_FILE
        if not file.exists():
            return None
        advice = "move it away to start the run over, or use a new --run-dir"
        import torch  # here: the commands that only read runs (table, plot, status) never load torch

        try:
            # Our own file; it holds RNG states and numpy arrays, which weights_only refuses.
            checkpoint = torch.load(file, map_location=map_location, weights_only=False)
        except (ModuleNotFoundError, AttributeError) as error:  # a pickled class that moved or was renamed
            raise UsageError(
                f"checkpoint {file} was written by another version of ClipZoo ({error}); resume it with the "
                f"commit that wrote it (attempts.json names it), or {advice}"
            ) from None
        except Exception as error:  # torch raises many types for a damaged or foreign file
            raise UsageError(
                f"checkpoint {file} cannot be read ({type(error).__name__}: {str(error)[:200]}); {advice}"
            ) from None
        if not isinstance(checkpoint, dict) or "global_step" not in checkpoint:
            raise UsageError(f"{file} is not a ClipZoo checkpoint; {advice}")
        saved_config = checkpoint.get("run_config")  # absent in checkpoints of older versions
        if saved_config is not None and self.config is not None and self._differing(saved_config, self.config):
            keys = ", ".join(self._differing(saved_config, self.config)[:5])
            raise UsageError(
                f"checkpoint {file} belongs to another run or agent (options that differ: {keys}); {advice}"
            )
        return checkpoint

    def save_checkpoint(self, state: dict) -> None:
        atomic_torch_save({**state, "run_config": self.config}, self.path / CHECKPOINT_FILE)

    def save_model(self, state: dict) -> None:
        atomic_torch_save(state, self.path / MODEL_FILE)

    def set_status(self, state: str, **details: Any) -> None:
        record = {
            "state": state,
            "time": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started,
            "slurm_job": slurm_job_of_this_process(),
            **details,
        }
        atomic_write_text(self.path / STATUS_FILE, json.dumps(_jsonable(record), indent=2) + "\n")
        self._running = record if state == "running" else None
        if self._attempts and state != "running":
            self._attempts[-1].update(ended=state, ended_at_step=details.get("global_step"), ended_time=record["time"])
            self._write_attempts()

    def report_progress(self, step: int, steps_per_second: float, eta_seconds: float) -> None:
        """Add where training is now to the "running" record (whose ``global_step`` stays the
        last checkpoint's), so ``sweep`` can show each run's step and ETA."""
        if self._running is not None:
            record = {
                **self._running,
                "step": step,
                "steps_per_second": steps_per_second,
                "eta_seconds": eta_seconds,
                "time": time.time(),
            }
            atomic_write_text(self.path / STATUS_FILE, json.dumps(_jsonable(record), indent=2) + "\n", durable=False)

    def begin_attempt(self, resumed_from: int | None) -> None:
        """Append this attempt to ``attempts.json``: when, the command, the code's version, the step it resumes from."""
        self._attempts = read_attempts(self.path)
        self._attempts.append(
            {
                "started": time.time(),
                "host": socket.gethostname(),
                "slurm_job": slurm_job_of_this_process(),
                "command": sys.argv,
                **code_version(),
                "resumed_from_step": resumed_from,
                "exact": True,
            }
        )
        self._write_attempts()

    def record_inexact_resume(self, step: int, reason: str) -> None:
        if self._attempts:
            self._attempts[-1].update(exact=False, inexact_reason=reason)
            self._write_attempts()

    def resume_record(self) -> dict:
        """What status.json says of the attempts at a complete run: how many resumes, and whether all were exact."""
        resumes = [a for a in self._attempts or [] if a.get("resumed_from_step") is not None]
        return {"resumes": len(resumes), "resumed_exactly": all(a.get("exact", True) for a in resumes)}

    def _write_attempts(self) -> None:
        atomic_write_text(self.path / ATTEMPTS_FILE, json.dumps(_jsonable(self._attempts), indent=2) + "\n")

    def remove_partial_writes(self) -> list[Path]:
        """The temporary files of writes a kill -9 cut short (``.<name>.*.tmp``, see runners/base/files.py)."""
        leftovers = [file for file in self.path.rglob(".*.tmp") if file.is_file()]
        for file in leftovers:
            file.unlink(missing_ok=True)
        return leftovers

    def status(self) -> dict | None:
        return read_status(self.path)


def rng_state() -> dict:
    """Every random stream a run draws from, for checkpoints."""
    import random

    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    # Only a process that has used CUDA has drawn from its generators; asking otherwise would
    # start a CUDA context (and take GPU memory) in every CPU run on a GPU machine.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    import random

    import numpy as np
    import torch

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
    import torch

    saved = rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds CUDA too
    try:
        yield
    finally:
        restore_rng_state(saved)


class StopRequest:
    """Turns SIGINT (Ctrl-C), SIGTERM and SIGUSR1 (sent by schedulers before a time limit)
    into a flag the training loop polls between gradient steps, so it can checkpoint and
    exit instead of dying mid-write. The run then ends with ``RunInterrupted``."""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopRequest:
        for name in self.SIGNALS:
            number = getattr(signal, name)
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame) -> None:
        if self.signal_name is None:  # the first signal names the stop
            self.signal_name = signal.Signals(number).name

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


def execute_run(path: str | Path, config: dict[str, Any], free_keys: set[str], train) -> Path:
    """Claim a run directory and run ``train(run, writer, checkpoint)`` in it.

    A complete run is not repeated; an interrupted one resumes from its checkpoint, and
    the TensorBoard writer's purge_step drops the events its previous attempt logged
    after that checkpoint (an agent logs everything at a step before checkpointing it),
    or all of them when that attempt died before its first checkpoint.
    The outcome lands in status.json: the agent marks completion, this marks failure.
    With ``config["track"]``, W&B mirrors the TensorBoard logs (runners/base/tracking.py).
    """
    from torch.utils.tensorboard import SummaryWriter

    from runners.base.tracking import import_wandb, mirrored

    wandb = import_wandb() if config.get("track") else None  # refused before anything is written
    run = RunDirectory(path)
    with run.claim():
        resuming = run.bind_config(config, free_keys=free_keys)
        if resuming and (run.status() or {}).get("state") == "complete":
            print(f"{run.path} is already complete; nothing to do")
            return run.path
        run.remove_partial_writes()  # we hold the lock: no other writer is mid-write
        checkpoint = run.load_checkpoint()
        run.begin_attempt(resumed_from=checkpoint["global_step"] if checkpoint else None)
        wait_for_a_later_second_than_the_newest_event_file(run.path)
        try:
            # --track: W&B starts before the writer (it patches it) and finishes after it is closed
            with (
                mirrored(wandb, run.path, config),
                SummaryWriter(str(run.path), purge_step=checkpoint["global_step"] + 1 if checkpoint else 0) as writer,
            ):
                train(run, writer, checkpoint)
        except RunInterrupted:
            raise  # the agent marked the run interrupted after its checkpoint
        except KeyboardInterrupt:  # before the agent's signal handling was in place
            _record_outcome(run, "interrupted", signal="SIGINT")
            raise
        except BaseException as error:
            _record_outcome(run, "failed", error=f"{type(error).__name__}: {error}")
            raise
    return run.path


def wait_for_a_later_second_than_the_newest_event_file(run_dir: Path) -> None:
    """Keep event file names in the order they were written.

    TensorBoard reads a directory's event files in name order, and a name is the second it
    was opened in followed by host, pid and a per-process counter compared as text ("10"
    sorts before "9"). An attempt opened in the same second as the one before it can sort
    first; the older file, read last, then looks like a restart and purges the new points.
    """
    stamps = (f.name.split(".")[3] for f in run_dir.glob("events.out.tfevents.*"))
    opened_at = [int(stamp) for stamp in stamps if stamp.isdigit()]
    wait = max(opened_at, default=0) + 1 - time.time()
    if wait > 2:  # a file from another host's clock; waiting for it could take hours
        print(
            f"warning: an event file in {run_dir} is {wait:.0f} s ahead of this host's clock; "
            "TensorBoard may read this attempt's points out of order",
            file=sys.stderr,
        )
    elif wait > 0:
        time.sleep(wait)


def _record_outcome(run: RunDirectory, state: str, **details: Any) -> None:
    """Mark the outcome; a failure to write it (a full disk) must not hide the original error."""
    with contextlib.suppress(Exception):
        run.set_status(state, **details)


def duration(seconds: float) -> str:
    """``1:05:09`` or ``4:12`` (minutes:seconds under an hour); ``2d 3:00:00`` beyond a day."""
    seconds = max(0, int(round(seconds)))
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    clock = f"{hours}:{minutes:02d}:{seconds:02d}" if hours or days else f"{minutes}:{seconds:02d}"
    return f"{days}d {clock}" if days else clock
