"""Runs stay trustworthy: one trainer per run directory, dead runs detected, exact resumes,
signals honoured between gradient steps, aggregates that say what they include, bad input
in one line."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runners import cli, plots
from runners.base.rundir import (
    RunDirectory,
    duration,
    effective_state,
    read_status,
    wait_for_a_later_second_than_the_newest_event_file,
)

REPO = Path(__file__).resolve().parent.parent
CARTPOLE = (
    "--env-id CartPole-v1 --num-envs 2 --batch-size 32 --buffer-size 2000 --learning-starts 200 "
    "--learning-rate 0.001 --n-step 1 --target-update-period 100 --eps-decay-steps 500 --log-every 100 "
    "--diagnostics-every 300 --heatmap-every 600 --gradcov-samples 32 --probe-samples 64 "
    "--checkpoint-every 200"
).split()
RAINBOW_EXTRA = ["--num-atoms", "11", "--beta-anneal-steps", "1000"]


def steps_by_tag(run_dir: Path) -> dict[str, list[int]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def start(agent: str, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "train", agent, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and not condition():
        time.sleep(0.05)
    assert condition(), "timed out"


def cli_exit(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


# ---------------------------------------------------------------- one trainer per run directory
def test_a_second_trainer_on_a_live_run_directory_is_refused_naming_the_holder(tmp_path):
    run = RunDirectory(tmp_path)
    with run.claim():
        run.set_status("running", global_step=0)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "runners.cli",
                "train",
                "dqn",
                *CARTPOLE,
                "--total-timesteps",
                "1000",
                "--run-dir",
                str(tmp_path),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert f"is being trained by pid {os.getpid()} on {socket.gethostname()}" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert read_status(tmp_path)["pid"] == os.getpid(), "the refused trainer left the status alone"
        assert effective_state(tmp_path, read_status(tmp_path))["state"] == "running"
    # the holder died without a word (kill -9): its lock is gone, the run is interrupted
    state = effective_state(tmp_path, read_status(tmp_path))
    assert state["state"] == "interrupted" and "is gone" in state["stale"]


def test_a_running_marker_of_a_finished_slurm_job_reads_as_interrupted(tmp_path):
    (tmp_path / "status.json").write_text(
        json.dumps({"state": "running", "host": "node7", "pid": 1, "slurm_job": "77_3"})
    )
    status = read_status(tmp_path)
    assert effective_state(tmp_path, status, lambda job: job == "77_3")["state"] == "running"
    assert effective_state(tmp_path, status, lambda job: False)["state"] == "interrupted"
    assert effective_state(tmp_path, status, lambda job: None)["state"] == "running", "cannot tell: leave it"


# ---------------------------------------------------------------- signals
@pytest.mark.slow
def test_sigterm_inside_a_long_update_block_finishes_the_block_and_is_honoured_within_seconds(tmp_path):
    # replay ratio 128 with one env: each collect is one env step followed by 128 gradient steps
    options = [
        *CARTPOLE,
        "--num-envs",
        "1",
        "--replay-ratio",
        "128",
        "--batch-size",
        "256",
        "--learning-starts",
        "256",
        "--target-update-period",
        "128",
        "--total-timesteps",
        "100000",
        "--run-dir",
        str(tmp_path),
    ]
    process = start("dqn", options)
    wait_for(lambda: (read_status(tmp_path) or {}).get("state") == "running")
    time.sleep(2.0)
    sent = time.time()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert time.time() - sent < 15
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1] == f"SIGTERM: checkpointed; rerun with --run-dir {tmp_path} to resume"
    status = read_status(tmp_path)
    assert status["state"] == "interrupted" and status["signal"] == "SIGTERM"
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert checkpoint["global_step"] == status["global_step"]
    # whole blocks only: the checkpoint is a state the uninterrupted run passes through (exact resume)
    assert checkpoint["gradient_steps"] == 128 * (status["global_step"] - 256)


@pytest.mark.slow
def test_ctrl_c_stops_a_local_sweep_and_its_runs_checkpoint(tmp_path):
    from test_sweep import TINY_DQN

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        json.dumps(
            {
                "name": "stop",
                "agent": "dqn",
                "envs": ["CartPole-v1"],
                "seeds": 3,
                "budget": 100000,
                "common": TINY_DQN,
                "variants": {"adam": {}},
            }
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "sweep", str(spec), "--workers", "1", "--dir", str(tmp_path / "sweep")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    runs = [tmp_path / "sweep" / "CartPole-v1" / "adam" / f"seed_{seed}" for seed in (1, 2, 3)]
    wait_for(lambda: (read_status(runs[0]) or {}).get("global_step", 0) > 200)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out + err
    assert "SIGINT: starting no more runs" in out
    first = read_status(runs[0])
    assert first["state"] == "interrupted" and first["signal"] == "SIGINT"
    assert torch.load(runs[0] / "checkpoint.pt", weights_only=False)["global_step"] == first["global_step"]
    assert read_status(runs[1]) is None and read_status(runs[2]) is None, "no queued run was started"


# ---------------------------------------------------------------- sweeps never start or submit a live run
def tiny_spec(tmp_path: Path, **changes) -> Path:
    from test_sweep import spec

    return spec(tmp_path, **changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seeds": [1, 1]}, "'seeds' in .* lists 1 more than once"),
        ({"envs": ["CartPole-v1", "CartPole-v1"]}, "'envs' in .* lists CartPole-v1 more than once"),
        (
            {"variants": {"adam": {"wc_kappa": -1}}},
            "variant adam, env CartPole-v1, seed 1: --wc-kappa must be a finite number > 0",
        ),
        ({"budget": -5}, "'budget' in .* must be a positive whole number"),
        ({"budget": 201}, "--total-timesteps 201 leaves no training after the warm-up"),
        ({"variants": {"adam": {"learning_rate": float("nan")}}}, "--learning-rate must be a finite number, got nan"),
        ({"seeds": True}, "'seeds' .* must be a positive count"),
        ({"variants": {"adam": [1]}}, "variant 'adam' in .* must map option names to values"),
        ({"resources": {"cpus": 0}}, "resources.cpus in .* must be a whole number >= 1, got 0"),
    ],
)
def test_dry_run_validates_every_option_first(tmp_path, capsys, changes, message):
    code, out, err = cli_exit(
        ["sweep", str(tiny_spec(tmp_path, **changes)), "--dry-run", "--dir", str(tmp_path / "s")], capsys
    )
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "s").exists()


def test_a_local_sweep_does_not_start_a_run_another_process_is_training(tmp_path, capsys):
    from runners.sweep import load_spec, run_local

    sweep = load_spec(tiny_spec(tmp_path), tmp_path / "sweep")
    busy, *done = sweep.runs
    for run in done:
        RunDirectory(run.path).path.mkdir(parents=True)
        (run.path / "status.json").write_text(json.dumps({"state": "complete"}))
    with RunDirectory(busy.path).claim() as holder:
        holder.set_status("running", global_step=10)
        assert run_local(sweep, workers=2, poll_seconds=0.01) == []  # nothing failed: exit 0
    out = capsys.readouterr().out
    assert f"not started: {busy.path} is running elsewhere (pid {os.getpid()}" in out
    assert f"left to another process: {busy.path} is running there (pid {os.getpid()}" in out
    assert f"{len(sweep.runs) - 1}/{len(sweep.runs)} complete, 1 running elsewhere" in out
    assert "0 to run" in out and not (busy.path / "stdout.log").exists()


def test_sweep_progress_shows_each_runs_own_step_and_eta_once_per_change(tmp_path, capsys, monkeypatch):
    from runners.sweep import Progress, load_spec

    sweep = load_spec(tiny_spec(tmp_path), tmp_path / "sweep")
    first, second, *rest = sweep.runs
    budget = int(first.options["total_timesteps"])
    with RunDirectory(first.path).claim() as holder:
        holder.set_status("running", global_step=0, total_timesteps=budget)
        holder.report_progress(step=budget // 2, steps_per_second=100.0, eta_seconds=budget / 200)
        assert read_status(first.path)["global_step"] == 0  # the checkpoint's step stays what it was
        progress = Progress(sweep, sweep.runs, workers=1)
        for _ in range(3):
            progress.show()
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 1  # nothing changed: no repeated lines
        left = budget // 2 + budget * (len(sweep.runs) - 1)
        assert lines[0] == (
            f"0/{len(sweep.runs)} runs done; running: {first.env}/{first.variant}/seed_{first.seed} "
            f"{budget // 2:,}/{budget:,}, ETA {duration(budget / 200)}; sweep ETA ~{duration(left / 100)} "
            f"at the running runs' rates"
        )
        RunDirectory(second.path).path.mkdir(parents=True)
        (second.path / "status.json").write_text(json.dumps({"state": "complete"}))
        progress.show()  # a run ended: a new line at once
        assert capsys.readouterr().out.startswith(f"1/{len(sweep.runs)} runs done")


def test_slurm_submission_leaves_out_running_and_queued_runs_and_offers_killed_ones(tmp_path, monkeypatch, capsys):
    from runners import slurm, slurm_queue
    from runners.sweep import load_spec, status_table

    sweep = load_spec(tiny_spec(tmp_path), tmp_path / "sweep")
    live, requeued, failed, killed = (run.path for run in sweep.runs)
    records = {
        live: {"state": "running", "slurm_job": "500_0"},
        requeued: {"state": "interrupted", "slurm_job": "500_1"},
        failed: {"state": "failed", "error": "x"},
        killed: {"state": "running", "slurm_job": "500_3"},
    }
    for path, record in records.items():
        path.mkdir(parents=True)
        (path / "status.json").write_text(json.dumps({**record, "host": "node1", "pid": 4, "global_step": 8}))
    (tmp_path / "sweep" / "slurm").mkdir()
    (tmp_path / "sweep" / "slurm" / "tasks_0.txt").write_text("".join(f"{run.path.resolve()}\n" for run in sweep.runs))
    (tmp_path / "sweep" / "slurm" / "jobs.json").write_text(
        json.dumps([{"job_id": "500", "script": "array_0.sbatch", "tasks": 4}])
    )
    asked = []
    monkeypatch.setattr(
        slurm_queue, "squeue_tasks", lambda ids: asked.append(ids) or {"500_0": "RUNNING", "500_1": "PENDING"}
    )

    table = status_table(sweep)
    assert f"queued       {requeued}" in table and f"running      {live}" in table
    assert f"interrupted  {killed}" in table and "SLURM job 500_3 is gone" in table
    for only_failed, number in ((True, 1), (False, 2)):
        slurm.submit(sweep, {}, "true", dry_run=True, only_failed=only_failed)
        submitted = (tmp_path / "sweep" / "slurm" / f"tasks_{number}.txt").read_text().split()
        assert submitted == [str(failed.resolve()), str(killed.resolve())]
    assert "leaving out 2 runs that are running or queued" in capsys.readouterr().out
    assert asked[0] == ["500"]


def test_a_complete_run_stays_complete_while_its_slurm_task_finishes(tmp_path, monkeypatch):
    from runners import slurm_queue
    from runners.sweep import load_spec, run_states

    sweep = load_spec(tiny_spec(tmp_path), tmp_path / "sweep")
    done, requeued = sweep.runs[0].path, sweep.runs[1].path
    for path, state in ((done, "complete"), (requeued, "interrupted")):
        path.mkdir(parents=True)
        (path / "status.json").write_text(
            json.dumps({"state": state, "slurm_job": "7_0", "host": "node1", "pid": 4, "global_step": 8})
        )
    (tmp_path / "sweep" / "slurm").mkdir()
    (tmp_path / "sweep" / "slurm" / "tasks_0.txt").write_text(f"{done.resolve()}\n{requeued.resolve()}\n")
    (tmp_path / "sweep" / "slurm" / "jobs.json").write_text(
        json.dumps([{"job_id": "7", "script": "array_0.sbatch", "tasks": 2}])
    )
    monkeypatch.setattr(slurm_queue, "squeue_tasks", lambda ids: {"7_0": "RUNNING", "7_1": "PENDING"})
    states = {run.path: state["state"] for run, state in run_states(sweep).items()}
    assert states[done] == "complete" and states[requeued] == "queued"


# ---------------------------------------------------------------- aggregates say what they include
def test_tables_and_plots_leave_out_unfinished_runs_unless_asked(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter

    for seed, last in ((1, 1000), (2, 1000), (3, 500)):
        run = tmp_path / "CartPole-v1" / "adam" / f"seed_{seed}"
        run.mkdir(parents=True)
        (run / "config.json").write_text("{}")
        state = "complete" if last == 1000 else "interrupted"
        (run / "status.json").write_text(json.dumps({"state": state, "global_step": last, "total_timesteps": 1000}))
        with SummaryWriter(str(run)) as writer:
            for step in range(100, last + 1, 100):
                writer.add_scalar("charts/episodic_return", step / 100 + seed, step)
    code = None
    try:
        cli.main(["table", str(tmp_path), "--metric", "charts/episodic_return"])
    except SystemExit as exit_info:
        code = exit_info.code
    out = capsys.readouterr().out
    assert code is None
    assert "| CartPole-v1 | adam | 11.5 |" in out and out.split("\n")[2].endswith("| 2 |")  # seeds 1, 2 at step 1000
    assert "left out " + str(tmp_path / "CartPole-v1" / "adam" / "seed_3") + ": interrupted at step 500 of 1,000" in out

    cli.main(
        ["table", str(tmp_path), "--metric", "charts/episodic_return", "--include-partial", "--last-fraction", "0.4"]
    )
    out = capsys.readouterr().out
    # every seed cut at step 500: mean over seeds of the mean of steps 400 and 500
    assert "| CartPole-v1 | adam | 6.5 |" in out and "| 3 |" in out and "included partial run" in out
    curves = plots.aggregate(
        plots.select_runs(plots.find_runs(tmp_path), include_partial=True)[0], "charts/episodic_return"
    )
    assert curves[0].seeds == 3 and curves[0].steps[-1] == 500


# ---------------------------------------------------------------- bad input: one line, exit 2
def test_bad_inputs_end_in_one_line(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    (tmp_path / "bad_sweep").mkdir()
    (tmp_path / "bad_sweep" / "manifest.json").write_text("{")
    garbage = tmp_path / "garbage_run"
    garbage.mkdir()
    (garbage / "checkpoint.pt").write_bytes(b"not a checkpoint")
    foreign = tmp_path / "foreign_run"
    foreign.mkdir()
    torch.save({"global_step": 5, "run_config": {"env_id": "Hopper-v5"}}, foreign / "checkpoint.pt")
    train = ["train", "dqn", *CARTPOLE, "--total-timesteps", "1000"]
    cases = [
        ([*train, "--run-dir", str(a_file)], f"{a_file} exists and is not a directory"),
        ([*train, "--run-dir", str(a_file / "run")], f"{a_file} exists and is not a directory"),
        (["train", "ppo", "--learning-rate", "nan"], "--learning-rate must be a finite number, got nan"),
        ([*train, "--gamma", "inf"], "--gamma must be a finite number, got inf"),
        ([*train, "--replay-ratio", "1000000"], "--replay-ratio must be > 0 and at most 128"),
        ([*train, "--torch-threads", "0"], "--torch-threads must be >= 1, got 0"),
        (["train", "ppo", "--heatmap-every", "-1"], "--heatmap-every must be >= 0, got -1"),
        (["train", "ppo", "--checkpoint-every", "0"], "--checkpoint-every must be >= 1, got 0"),
        ([*train, "--plasticity-probe-steps", "-2"], "--plasticity-probe-steps must be >= 0, got -2"),
        ([*train, "--run-dir", str(garbage)], f"checkpoint {garbage / 'checkpoint.pt'} cannot be read"),
        ([*train, "--run-dir", str(foreign)], "belongs to another run or agent (options that differ:"),
        (
            ["table", str(tmp_path), "--metric", "x", "--last-fraction", "nan"],
            "--last-fraction must be in (0, 1], got nan",
        ),
        (
            ["table", str(tmp_path), "--metric", "x", "--last-fraction", "-1"],
            "--last-fraction must be in (0, 1], got -1.0",
        ),
        (["plot", str(a_file), "--metric", "x"], f"{a_file} is not a directory"),
        (["sweep", "status", str(tmp_path / "bad_sweep")], "manifest.json cannot be read"),
        (["sweep", str(tiny_spec(tmp_path)), "--workers", "0"], "--workers must be >= 1, got 0"),
        (["sweep", str(tiny_spec(tmp_path)), "--dir", str(a_file)], f"--dir {a_file} exists and is not a directory"),
        (["trian", "dqn"], "unknown command 'trian'; did you mean train?"),
        (
            ["sweep", str(tiny_spec(tmp_path)), "--backend", "slurm", "--dry-run", "--cpus", "0"],
            "--cpus must be a whole number >= 1, got 0",
        ),
        (
            ["sweep", str(tiny_spec(tmp_path)), "--backend", "slurm", "--dry-run", "--time", "3h"],
            "--time must be a SLURM time limit",
        ),
        (
            ["sweep", str(tiny_spec(tmp_path)), "--backend", "slurm", "--dry-run", "--mem", "lots"],
            "--mem must be a SLURM memory size",
        ),
    ]
    for argv, message in cases:
        code, _, err = cli_exit(argv, capsys)
        assert code == 2 and message in err, (argv, err)
        assert "Traceback" not in err and err.startswith("error:"), (argv, err)

    def full_disk(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("runners.base.files.os.fsync", full_disk)
    code, _, err = cli_exit([*train, "--run-dir", str(tmp_path / "full")], capsys)
    assert code == 2 and f"cannot write {tmp_path / 'full' / 'config.json'}: No space left on device" in err
    assert len(err.strip().splitlines()) == 1


def test_sweep_status_into_a_closed_pipe_ends_quietly(tmp_path):
    runs = [
        {"env": "CartPole-v1", "variant": "adam", "seed": seed, "path": f"CartPole-v1/adam/seed_{seed}", "options": {}}
        for seed in range(3000)
    ]
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "big", "agent": "dqn", "resources": {}, "runs": runs}))
    result = subprocess.run(
        f"{sys.executable} -m runners.cli sweep status {tmp_path} | head -1",
        shell=True,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.startswith("pending") and result.stderr == ""


def test_a_resumed_runs_events_read_back_without_warnings_or_stale_points(tmp_path, caplog):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as writer:  # the first attempt, killed after its checkpoint at 300
        for step in range(100, 501, 100):
            writer.add_scalar("losses/td_loss", 1.0, step)
    wait_for_a_later_second_than_the_newest_event_file(tmp_path)  # as execute_run does
    with SummaryWriter(str(tmp_path), purge_step=301) as writer:  # the resume
        for step in range(400, 701, 100):
            writer.add_scalar("losses/td_loss", 2.0, step)
    with caplog.at_level("WARNING"):
        steps, values = plots.read_scalar(tmp_path, "losses/td_loss")
    assert list(steps) == [100, 200, 300, 400, 500, 600, 700] and list(values) == [1, 1, 1, 2, 2, 2, 2]
    assert not [r for r in caplog.records if "out of order" in r.getMessage()]


def attempt_without_checkpoints(steps: list[int], dies: bool):
    """A train function for execute_run that logs a loss at ``steps`` and never checkpoints."""

    def train(run, writer, checkpoint):
        assert checkpoint is None
        for step in steps:
            writer.add_scalar("losses/td_loss", float(step), step)
        if dies:
            raise RuntimeError("killed before its first checkpoint")

    return train


def test_a_rerun_within_the_same_second_still_sorts_after_the_attempt_before_it(tmp_path):
    """Event files are read in name order, and the name starts with the second the file was
    opened in: a rerun that shared its predecessor's second could sort first and be purged."""
    from runners.base.rundir import execute_run

    with pytest.raises(RuntimeError):
        execute_run(tmp_path, {"seed": 1}, set(), attempt_without_checkpoints([300], dies=True))
    (first,) = tmp_path.glob("events.out.tfevents.*")
    parts = first.name.split(".")
    parts[3] = "%010d" % (int(time.time()) + 1)  # as if the rerun opened its file in an earlier second
    first.rename(tmp_path / ".".join(parts))
    execute_run(tmp_path, {"seed": 1}, set(), attempt_without_checkpoints([300, 400, 500, 600], dies=False))
    assert steps_by_tag(tmp_path)["losses/td_loss"] == [300, 400, 500, 600]
    names = sorted(f.name for f in tmp_path.glob("events.out.tfevents.*"))
    assert len(names) == 2 and names[0] == ".".join(parts)


def test_a_rerun_of_an_attempt_that_died_before_its_first_checkpoint_logs_each_step_once(tmp_path):
    from runners.base.rundir import execute_run

    with pytest.raises(RuntimeError):
        execute_run(tmp_path, {"seed": 1}, set(), attempt_without_checkpoints([300], dies=True))
    execute_run(tmp_path, {"seed": 1}, set(), attempt_without_checkpoints([300, 400, 500, 600], dies=False))
    assert steps_by_tag(tmp_path)["losses/td_loss"] == [300, 400, 500, 600]
    steps, values = plots.read_scalar(tmp_path, "losses/td_loss")
    assert list(steps) == [300, 400, 500, 600] and list(values) == [300, 400, 500, 600]
