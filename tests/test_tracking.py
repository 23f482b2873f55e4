"""``--track``: W&B mirrors the TensorBoard logs (runners/base/tracking.py), offline here.

No test touches the network: W&B runs offline (WANDB_MODE=offline, or the fallback when
no API key is configured, before any probe of the server), every place W&B writes to
(home, cache, config, temp dir, current directory) is inside tmp_path, and each test
checks that W&B's service processes are gone and nothing was left outside the run.

W&B writes an offline run only to its transaction log (``run-<id>.wandb``: the records the
server would get). W&B 0.31 ships no Python reader of it, so ``wandb_records`` reads the
format, which is LevelDB's log format behind a 7-byte header (":W&B", magic 0xBEE1,
version 0): 32 KiB blocks of chunks, each with a 4-byte checksum, a 2-byte length and a
1-byte type (1 whole record, 2 first, 3 middle, 4 last piece), the records being
``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runners.base import tracking
from runners.base.rundir import read_attempts, read_status

CARTPOLE = (
    "--env-id CartPole-v1 --num-envs 2 --batch-size 32 --buffer-size 2000 --learning-starts 200 "
    "--learning-rate 0.001 --n-step 1 --target-update-period 100 --eps-decay-steps 500 --log-every 100 "
    "--diagnostics-every 300 --heatmap-every 600 --gradcov-samples 32 --probe-samples 64 "
    "--checkpoint-every 200 --total-timesteps 400"
).split()


def wandb_records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<HB", data[4:7]) == (0xBEE1, 0), "not a W&B transaction log"
    position, block, pieces = 7, 32768, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:  # zero padding to the end of the block
            position += block - position % block
            continue
        chunk, position = data[position + 7 : position + 7 + length], position + 7 + length
        pieces = chunk if kind in (1, 2) else pieces + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            yield record


def offline_runs(run_dir: Path) -> list[Path]:
    """The transaction logs of the run directory's offline W&B runs, one per tracked attempt, oldest first."""
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def history(log: Path) -> list[dict]:
    """The history rows W&B built from the event files; a medium (an image) is a dict under its tag."""
    rows = []
    for record in wandb_records(log):
        if record.WhichOneof("record_type") == "history":
            row: dict = {}
            for item in record.history.item:  # a medium's fields come as nested keys: (tag, field)
                *outer, key = item.nested_key or [item.key]
                row.setdefault("/".join(outer), {})[key] = json.loads(item.value_json)
            rows.append({**row.pop(""), **row} if "" in row else row)
    return rows


def history_scalars(log: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(TensorBoard step, value)] of the scalars in the W&B run's history."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for row in history(log):
        for key, value in row.items():
            if not key.startswith("_") and key != "global_step" and isinstance(value, (int, float)):
                scalars.setdefault(key, []).append((row["global_step"], value))
    return scalars


def the_record(log: Path, kind: str):
    (record,) = [getattr(r, kind) for r in wandb_records(log) if r.WhichOneof("record_type") == kind]
    return record


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def as_float32(points: list[tuple[int, float]]) -> list[tuple[int, np.float32]]:
    """TensorBoard keeps float32 and W&B writes each as its shortest decimal: equal as float32."""
    return [(step, np.float32(value)) for step, value in points]


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """W&B offline and silent, with its home, cache, config, data and temp dirs (where its service
    writes its port files) and the current directory inside tmp_path; afterwards, no process
    mentions tmp_path (wandb-core, wandb-symon) and those places hold nothing but W&B's debug logs."""
    import matplotlib

    matplotlib.get_cachedir()  # resolved (and kept) before HOME moves: its font cache is not W&B's
    places = {name: tmp_path / name for name in ("home", "cache", "config", "data", "tmp", "cwd")}
    for place in places.values():
        place.mkdir()
    for variable in (
        "WANDB_MODE",
        "WANDB_API_KEY",
        "WANDB_IDENTITY_TOKEN_FILE",
        "WANDB_BASE_URL",
        "WANDB_DIR",
        "NETRC",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(places["home"]))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(places["cache"]))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(places["config"]))
    monkeypatch.setenv("WANDB_DATA_DIR", str(places["data"]))
    monkeypatch.setenv("TMPDIR", str(places["tmp"]))
    monkeypatch.setattr(tempfile, "tempdir", str(places["tmp"]))
    monkeypatch.chdir(places["cwd"])
    monkeypatch.setattr(tracking, "server_reachable", lambda *a, **k: pytest.fail("a test probed the W&B server"))
    yield tmp_path
    processes = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path) not in processes, "a W&B service process outlived its run"
    children = [line for line in processes.splitlines()[1:] if line.split()[1] == str(os.getpid()) and "wandb" in line]
    assert children == [], children
    for name, place in places.items():
        left = [p.relative_to(place) for p in place.rglob("*") if p.is_file()]
        if name == "cache":  # wandb-core's and wandb-symon's own debug logs: <cache>/wandb/logs/*.log
            left = [p for p in left if not (p.parts[:2] == ("wandb", "logs") and p.suffix == ".log")]
        assert left == [], f"W&B left files in {name}: {left}"


def test_an_offline_tracked_run_mirrors_every_tensorboard_scalar_into_its_wandb_run(sandbox, clipzoo):
    run_dir = sandbox / "run"
    code, out, err = clipzoo("train", "dqn", *CARTPOLE, "--run-dir", str(run_dir), "--track")
    assert code == 0, err
    assert read_status(run_dir)["state"] == "complete"
    assert "W&B:" not in out, "WANDB_MODE=offline is the user's choice: no fallback line"

    (log,) = offline_runs(run_dir)
    run_id = (run_dir / tracking.RUN_ID_FILE).read_text().strip()
    record = the_record(log, "run")
    assert (record.run_id, record.project, record.display_name) == (run_id, "clipzoo", "run")
    config = {item.key: json.loads(item.value_json) for item in record.config.update}
    assert config["env_id"] == "CartPole-v1" and config["track"] is True and config["total_timesteps"] == 400
    assert the_record(log, "exit").exit_code == 0

    tensorboard, mirrored = tensorboard_scalars(run_dir), history_scalars(log)
    assert len(tensorboard) > 20 and "charts/episodic_return" in tensorboard and "losses/td_loss" in tensorboard
    assert sorted(mirrored) == sorted(tensorboard)
    for tag, points in tensorboard.items():
        assert as_float32(mirrored[tag]) == as_float32(points), tag
    images = {
        key: (row["global_step"], value["_type"])
        for row in history(log)
        for key, value in row.items()
        if isinstance(value, dict)
    }
    assert images == {"gradcov/heatmap": (400, "images/separated")}, "the heatmap too"
    # the event files stay where TensorBoard reads them, not copied below wandb/ (a sweep would show each run twice)
    assert [p.name for p in run_dir.rglob("events.out.tfevents.*") if p.parent != run_dir] == []


def test_track_without_wandb_installed_is_refused_in_one_line_before_anything_is_written(
    tmp_path, monkeypatch, clipzoo
):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ModuleNotFoundError
    run_dir = tmp_path / "run"
    code, out, err = clipzoo("train", "dqn", *CARTPOLE, "--run-dir", str(run_dir), "--track")
    assert (code, out) == (2, "")
    assert err == "error: --track needs Weights & Biases: pip install 'clipzoo[wandb]'\n"
    assert not run_dir.exists()


def test_a_resume_may_toggle_tracking_and_goes_on_in_the_same_wandb_run(sandbox, clipzoo, capsys):
    from runners.base.rundir import RunDirectory

    run_dir = sandbox / "run"
    save_checkpoint = RunDirectory.save_checkpoint

    def dies_after_a_checkpoint(self, state):
        save_checkpoint(self, state)
        raise RuntimeError("killed after a checkpoint")

    def attempt_that_dies(*options: str) -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(RunDirectory, "save_checkpoint", dies_after_a_checkpoint)
            with pytest.raises(RuntimeError, match="killed after"):
                clipzoo("train", "dqn", *CARTPOLE, "--run-dir", str(run_dir), *options)
        assert read_status(run_dir)["state"] == "failed"

    attempt_that_dies()  # untracked, checkpointed at step 300
    assert not (run_dir / "wandb").exists() and not (run_dir / tracking.RUN_ID_FILE).exists()
    # resumed with tracking on and other W&B options; no WANDB_MODE and no API key: offline by the
    # fallback, decided before any network probe, and said in one line
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("WANDB_MODE")
        attempt_that_dies("--track", "--wandb-project-name", "clipzoo-resumed", "--wandb-entity", "someone")
    (first,) = offline_runs(run_dir)
    fallback = [line for line in capsys.readouterr().out.splitlines() if line.startswith("W&B:")]
    assert fallback == [
        f"W&B: no API key is configured (wandb login, or WANDB_API_KEY); logging offline to "
        f"{first.parent}; upload it later with: wandb sync {first.parent}"
    ]
    assert the_record(first, "exit").exit_code == 1, "a failed attempt finishes its W&B run as failed"
    assert read_attempts(run_dir)[-1]["resumed_from_step"] == 300
    steps = {step for points in history_scalars(first).values() for step, _ in points}
    assert 300 < min(steps) and max(steps) == 400, "the attempt mirrors what it logged: the steps after its checkpoint"

    # the next attempt goes on in the same W&B run
    code, out, err = clipzoo(
        "train",
        "dqn",
        *CARTPOLE,
        "--run-dir",
        str(run_dir),
        "--track",
        "--wandb-project-name",
        "clipzoo-resumed",
        "--wandb-entity",
        "someone",
    )
    assert code == 0, err
    assert f"resuming {run_dir} from step 400" in out and read_status(run_dir)["state"] == "complete"
    assert offline_runs(run_dir)[0] == first
    (second,) = offline_runs(run_dir)[1:]
    run_id = (run_dir / tracking.RUN_ID_FILE).read_text().strip()
    assert the_record(first, "run").run_id == the_record(second, "run").run_id == run_id
    assert (the_record(second, "run").project, the_record(second, "run").entity) == ("clipzoo-resumed", "someone")
    assert the_record(second, "exit").exit_code == 0


def test_the_fallback_to_offline_needs_no_network_to_decide_without_a_key(tmp_path):
    def unreachable(url, environ):
        raise AssertionError("probed the network")

    no_key = {"NETRC": str(tmp_path / "absent")}
    assert "no API key" in tracking.offline_reason(no_key, reachable=unreachable)
    assert tracking.offline_reason({**no_key, "WANDB_MODE": "online"}, reachable=unreachable) is None, (
        "WANDB_MODE decides"
    )
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    with_key = {"NETRC": str(tmp_path / "netrc")}
    assert "api.wandb.ai cannot be reached" in tracking.offline_reason(with_key, reachable=lambda url, environ: False)
    assert tracking.offline_reason(with_key, reachable=lambda url, environ: True) is None
    elsewhere = {"WANDB_API_KEY": "k" * 40, "WANDB_BASE_URL": "https://wandb.cluster.example:8443"}
    assert "wandb.cluster.example cannot be reached" in tracking.offline_reason(
        elsewhere, reachable=lambda url, environ: False
    )
