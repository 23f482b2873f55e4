"""Weights & Biases tracking, CleanRL's ``--track``: W&B mirrors a run's TensorBoard logs.

``TrackingArgs`` is a base of each agent's ``Args`` (``--track``, ``--wandb-project-name``,
``--wandb-entity``). None of them changes what is learned, so a resume may toggle them
(``TRACKING_OPTIONS`` joins each agent's ``RESUMABLE_CHANGES``).

With ``--track``, ``execute_run`` starts a W&B run before the TensorBoard writer exists,
as CleanRL does (``sync_tensorboard=True``: W&B patches the writer and its own process
reads the event files back as history, with TensorBoard's step as ``global_step``), and
finishes it however training ends. Everything W&B writes for the run lands in
``<run_dir>/wandb/``; the raw event files are not copied there (TensorBoard would
otherwise find each run twice below a sweep directory).

W&B runs offline when ``WANDB_MODE`` says so; without it, offline too when no API key is
configured or the server cannot be reached (a cluster node), with one line that says how
to upload later (``wandb sync <dir>``). The W&B run id is kept in ``<run_dir>/wandb_run_id``,
so a resumed run goes on in the same W&B run. Points that an interrupted attempt logged
after its last checkpoint stay in W&B (TensorBoard drops them through ``purge_step``;
W&B's history only appends), so they appear twice there, at the same ``global_step``.
"""

from __future__ import annotations

import contextlib
import netrc
import os
import secrets
import socket
import string
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from runners.base.errors import RunInterrupted, UsageError
from runners.base.files import atomic_write_text

RUN_ID_FILE = "wandb_run_id"
INSTALL = "pip install 'clipzoo[wandb]'"
DEFAULT_BASE_URL = "https://api.wandb.ai"


@dataclass
class TrackingArgs:
    help_group: ClassVar[str] = "tracking"  # --help lists these options in a group of their own

    track: bool = False
    """mirror the TensorBoard logs to Weights & Biases (needs pip install 'clipzoo[wandb]'); offline, for a later
    `wandb sync`, under WANDB_MODE=offline or without an API key or network"""
    wandb_project_name: str = "clipzoo"
    """the W&B project of --track"""
    wandb_entity: str | None = None
    """the W&B entity (user or team) of --track; unset: the API key's default entity"""


TRACKING_OPTIONS = frozenset(field.name for field in fields(TrackingArgs))


def import_wandb():
    """The ``wandb`` module, or a UsageError in one line saying how to install it."""
    try:
        import wandb
    except ModuleNotFoundError as error:
        if error.name != "wandb":
            raise UsageError(f"--track: wandb cannot be imported ({error}); reinstall it: {INSTALL}") from None
        raise UsageError(f"--track needs Weights & Biases: {INSTALL}") from None
    except ImportError as error:
        raise UsageError(f"--track: wandb cannot be imported ({error}); reinstall it: {INSTALL}") from None
    return wandb


def api_key_configured(environ: Mapping[str, str], host: str) -> bool:
    """Whether W&B has credentials without asking: WANDB_API_KEY, an identity token file, or
    a netrc entry for the host (what ``wandb login`` writes)."""
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    path = Path(environ["NETRC"]).expanduser() if environ.get("NETRC") else Path.home() / ".netrc"
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def server_reachable(url: str, environ: Mapping[str, str], timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the W&B server (or the HTTPS proxy, when one is set) opens."""
    proxy = environ.get("HTTPS_PROXY") or environ.get("https_proxy")
    parts = urlsplit(proxy or url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except (OSError, ValueError, TypeError):
        return False


def offline_reason(environ: Mapping[str, str] = os.environ, reachable=server_reachable) -> str | None:
    """Why W&B must log offline, or None to leave the mode to W&B (WANDB_MODE, ``wandb offline``)."""
    if environ.get("WANDB_MODE"):
        return None
    url = environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
    host = urlsplit(url).hostname or url
    if not api_key_configured(environ, host):
        return "no API key is configured (wandb login, or WANDB_API_KEY)"
    if not reachable(url, environ):
        return f"the server {host} cannot be reached"
    return None


def run_id(run_dir: Path) -> str:
    """The W&B run id of this run directory, made and saved by its first tracked attempt."""
    file = run_dir / RUN_ID_FILE
    with contextlib.suppress(OSError):
        saved = file.read_text().strip()
        if saved:
            return saved
    made = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # as W&B makes its ids
    atomic_write_text(file, made + "\n")
    return made


def _sync_dir(wandb_run, run_dir: Path) -> str:
    return str(getattr(wandb_run.settings, "sync_dir", None) or run_dir / "wandb")


def start(wandb, run_dir: Path, config: dict[str, Any]):
    """Start (or resume) the run directory's W&B run, offline where it must be, before any SummaryWriter exists."""
    reason = offline_reason()
    options = dict(
        project=config.get("wandb_project_name") or "clipzoo",
        entity=config.get("wandb_entity"),
        sync_tensorboard=True,
        config=config,
        name=run_dir.name,
        dir=str(run_dir),
        id=run_id(run_dir),
        resume="allow",
    )
    try:
        try:
            wandb_run = wandb.init(**options, mode="offline" if reason else None)
        except Exception as error:  # the server refused (a bad key or entity) or timed out
            if reason or os.environ.get("WANDB_MODE"):
                raise
            reason = f"W&B could not start online ({_one_line(error)})"
            wandb_run = wandb.init(**options, mode="offline")
    except Exception as error:
        with contextlib.suppress(Exception):
            wandb.teardown()
        raise UsageError(f"--track: W&B could not start the run ({_one_line(error)})") from None
    if reason:
        where = _sync_dir(wandb_run, run_dir)
        print(f"W&B: {reason}; logging offline to {where}; upload it later with: wandb sync {where}", flush=True)
    return wandb_run


def _one_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def finish(wandb, wandb_run, exit_code: int) -> None:
    """Finish the W&B run (0: complete, else failed or interrupted) and stop W&B's service process.

    A W&B failure here is reported, never raised: the run directory holds the outcome."""
    try:
        wandb_run.finish(exit_code=exit_code)
    except Exception as error:
        print(f"warning: W&B could not finish its run ({type(error).__name__}: {error})", file=sys.stderr)
    finally:
        with contextlib.suppress(Exception):
            wandb.teardown()


@contextlib.contextmanager
def mirrored(wandb, run_dir: Path, config: dict[str, Any]) -> Iterator[Any]:
    """W&B mirrors the TensorBoard events written in the block (nothing when ``wandb`` is None);
    its run is finished when the block ends, with the outcome as its exit code."""
    if wandb is None:
        yield None
        return
    # sync_tensorboard alone would patch with save=True: copies of the event files below wandb/
    patched_here = not wandb.patched["tensorboard"]
    if patched_here:
        wandb.tensorboard.patch(root_logdir=str(run_dir), save=False)
    try:
        wandb_run = start(wandb, run_dir, config)
    except BaseException:
        if patched_here:
            wandb.tensorboard.unpatch()
        raise
    exit_code = 1
    try:
        yield wandb_run
        exit_code = 0
    except RunInterrupted as stop:
        exit_code = stop.exit_code
        with contextlib.suppress(Exception):
            wandb_run.mark_preempting()
        raise
    except KeyboardInterrupt:
        exit_code = 130
        raise
    finally:
        finish(wandb, wandb_run, exit_code)
        if patched_here:
            wandb.tensorboard.unpatch()
