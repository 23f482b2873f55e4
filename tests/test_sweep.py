"""Sweep specs: validation, deterministic manifests, the local backend surviving a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runners.base.errors import UsageError
from runners.base.rundir import read_status
from runners.sweep import load_spec, write_manifest

REPO = Path(__file__).resolve().parent.parent
TINY_DQN = {
    "num_envs": 2,
    "batch_size": 32,
    "buffer_size": 2000,
    "learning_starts": 200,
    "n_step": 1,
    "target_update_period": 100,
    "log_every": 100,
    "diagnostics_every": 300,
    "heatmap_every": 600,
    "gradcov_samples": 32,
    "probe_samples": 64,
    "checkpoint_every": 200,
}


def spec(tmp_path: Path, **changes) -> Path:
    content = {
        "name": "tiny",
        "agent": "dqn",
        "envs": ["CartPole-v1"],
        "seeds": 2,
        "budget": 1000,
        "common": TINY_DQN,
        "variants": {"adam": {}, "adam+wc": {"wc_kappa": 2.0}},
    }
    content.update(changes)
    content = {k: v for k, v in content.items() if v is not None}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def test_expansion_and_run_directories(tmp_path):
    sweep = load_spec(
        spec(tmp_path, envs=["CartPole-v1", "ALE/Pong-v5"], grid={"learning_rate": [0.001, 0.0001]}), tmp_path / "out"
    )
    assert len(sweep.runs) == 2 * 4 * 2
    names = {str(run.path.relative_to(tmp_path / "out")) for run in sweep.runs}
    assert "ALE_Pong-v5/adam+wc_learning_rate0.001/seed_2" in names
    run = next(
        r for r in sweep.runs if r.variant == "adam+wc_learning_rate0.0001" and r.env == "CartPole-v1" and r.seed == 1
    )
    assert (
        run.options["wc_kappa"] == 2.0
        and run.options["learning_rate"] == 0.0001
        and run.options["total_timesteps"] == 1000
    )


def test_what_the_runs_checks_print_is_printed_once_for_the_sweep(tmp_path, capsys):
    # 400 steps: 200 after the warm-up, shorter than --log-every 300 in the adam runs only
    variants = {"adam": {"log_every": 300}, "adam+wc": {"wc_kappa": 2.0}}
    load_spec(spec(tmp_path, budget=400, variants=variants), tmp_path / "out")
    assert capsys.readouterr().out.splitlines() == [
        "--log-every 300 is longer than the 200 env steps after the warm-up; logging every 200 env steps (2 runs of 4)"
    ]


def test_manifest_is_deterministic(tmp_path):
    first = write_manifest(load_spec(spec(tmp_path), tmp_path / "a")).read_text()
    second = write_manifest(load_spec(spec(tmp_path), tmp_path / "a")).read_text()
    assert first == second
    assert [r["path"] for r in json.loads(first)["runs"]] == [
        "CartPole-v1/adam/seed_1",
        "CartPole-v1/adam/seed_2",
        "CartPole-v1/adam+wc/seed_1",
        "CartPole-v1/adam+wc/seed_2",
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seed": 3}, "unknown sweep key 'seed'.*did you mean seeds"),
        ({"agent": "dqnn"}, "unknown agent 'dqnn'.*did you mean dqn"),
        ({"envs": ["CartPol-v1"]}, "unknown env id 'CartPol-v1'; did you mean CartPole-v1"),
        (  # refused before any run starts, by its class: each run would fail at its start
            {"agent": "ppo", "envs": ["Hopper-v5", "BipedalWalker-v3"]},
            r"BipedalWalker-v3: cannot capture the state of BipedalWalker \(gymnasium.envs.box2d.bipedal_walker\)",
        ),
        ({"envs": []}, "'envs' .* must be a non-empty list"),
        ({"seeds": []}, "'seeds' .* must be a positive count or a non-empty list"),
        ({"variants": {}}, "'variants' .*at least one"),
        ({"grid": {"learning_rate": []}}, "'grid' .* non-empty lists"),
        ({"variants": {"a b": {}, "a_b": {}}}, "variant name 'a_b' occurs twice"),
        ({"variants": {"adam": {"wc_kapa": 2}}}, "unknown config key 'wc_kapa'.*did you mean wc_kappa"),
        ({"resources": {"memory": "4G"}}, "unknown resource 'memory'.*did you mean mem"),
        ({"agent": None}, "needs 'agent'"),
    ],
)
def test_bad_specs_are_refused_by_name(tmp_path, changes, message):
    with pytest.raises(UsageError, match=message):
        load_spec(spec(tmp_path, **changes))


@pytest.mark.slow
def test_kill_mid_sweep_then_rerun_completes_every_run_once(tmp_path, clipzoo):
    path = spec(tmp_path, budget=400, seeds=2, variants={"adam": {}})  # one worker, two runs: one is left
    command = [
        sys.executable,
        "-m",
        "runners.cli",
        "sweep",
        str(path),
        "--workers",
        "1",
        "--dir",
        str(tmp_path / "sweep"),
    ]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    statuses = [tmp_path / "sweep" / "CartPole-v1" / "adam" / f"seed_{s}" / "status.json" for s in (1, 2)]

    def finished(status: Path) -> bool:  # complete, and its last line flushed as the process exits
        return (
            status.exists()
            and "complete" in status.read_text()
            and "done: " in (status.parent / "stdout.log").read_text()
        )

    deadline = time.time() + 240
    while time.time() < deadline and not any(finished(p) for p in statuses):
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # the sweep and every run it started
    process.wait()
    states = [json.loads(p.read_text())["state"] if p.exists() else "pending" for p in statuses]
    assert states[0] == "complete" and states[1] != "complete"

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{states.count('complete')} already complete" in rerun.stdout
    for status in statuses:
        assert json.loads(status.read_text())["state"] == "complete"
        log = (status.parent / "stdout.log").read_text()
        assert log.count("done: ") == 1, "every run completes exactly once"
        steps = [
            e.step
            for e in EventAccumulator(str(status.parent), size_guidance={"scalars": 0})
            .Reload()
            .Scalars("losses/td_loss")
        ]
        assert steps == sorted(set(steps)) and steps[-1] == 400
    _, status_report, _ = clipzoo("sweep", "status", str(tmp_path / "sweep"))
    assert status_report.strip().endswith("2 complete")


@pytest.mark.slow
def test_env_and_variant_flags_run_only_those_runs_and_keep_the_full_manifest(tmp_path, clipzoo):
    path = spec(tmp_path, envs=["CartPole-v1", "Acrobot-v1"], seeds=1, budget=300)
    directory = tmp_path / "sweep"
    code, out, err = clipzoo(
        "sweep", str(path), "--dir", str(directory), "--env", "Acrobot-v1", "--variant", "adam+wc", "--dry-run"
    )
    assert code == 0, err
    assert [line.split("--run-dir ")[1] for line in out.splitlines()] == [
        str(directory / "Acrobot-v1" / "adam+wc" / "seed_1")
    ]
    assert len(json.loads((directory / "manifest.json").read_text())["runs"]) == 4
    code, out, err = clipzoo("sweep", str(path), "--dir", str(directory), "--variant", "adam", "--env", "CartPole-v1")
    assert code == 0, err
    assert (
        "1 runs (1 of its 4 chosen), 0 already complete, 1 to run" in out and "1/1 (1 of its 4 chosen) complete" in out
    )
    assert (
        json.loads((directory / "CartPole-v1" / "adam" / "seed_1" / "status.json").read_text())["state"] == "complete"
    )
    for env, variant in (("CartPole-v1", "adam+wc"), ("Acrobot-v1", "adam"), ("Acrobot-v1", "adam+wc")):
        assert not (directory / env / variant / "seed_1" / "status.json").exists()
    assert len(json.loads((directory / "manifest.json").read_text())["runs"]) == 4
    code, out, err = clipzoo(
        "sweep", str(path), "--dir", str(directory), "--backend", "slurm", "--dry-run", "--env", "CartPole-v1"
    )
    assert code == 0, err
    tasks = (directory / "slurm" / "tasks_0.txt").read_text().split()
    assert tasks == [str((directory / "CartPole-v1" / "adam+wc" / "seed_1").resolve())]  # adam's run is complete
    code, _, err = clipzoo("sweep", str(path), "--dir", str(directory), "--env", "Acrobot-v2")
    assert code == 2 and "--env Acrobot-v2: sweep tiny has no such env; did you mean Acrobot-v1" in err
    code, _, err = clipzoo("sweep", str(path), "--dir", str(directory), "--variant", "sgd")
    assert code == 2 and "--variant sgd: sweep tiny has no such variant; known: adam, adam+wc" in err


def stand_in_run(path: Path, pause: float) -> list[str]:
    """A run's command for tests of the queue, not of training: it marks itself running (with a
    step and an ETA, as a trainer does), pauses, and completes; SIGTERM marks it interrupted."""
    status = str(path / "status.json")
    program = f"""
import json, os, signal, socket, sys, time
def mark(state, **details):
    with open({status!r}, "w") as file:
        json.dump({{"state": state, "pid": os.getpid(), "host": socket.gethostname(), **details}}, file)
signal.signal(signal.SIGTERM, lambda number, frame: (mark("interrupted"), sys.exit(143)))
mark("running", global_step=0, step=100, total_timesteps=300, steps_per_second=100.0, eta_seconds=2.0)
time.sleep({pause})
mark("complete", global_step=300)
"""
    return [sys.executable, "-c", program]


def queue_of_two(tmp_path: Path, monkeypatch, pauses: dict[str, float]):
    """Specs "first" (3 seeds) and "second" (1 seed) whose runs are stand-ins pausing ``pauses[seed dir]``
    (default 0.3 s); returns (first spec, second spec, first's run dirs, second's run dir, launches)."""
    from functools import partial

    from runners import sweep as sweeps

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = spec(tmp_path / "a", name="first", budget=300, seeds=3, variants={"adam": {}})
    second = spec(tmp_path / "b", name="second", budget=300, seeds=1, variants={"adam": {}})
    monkeypatch.chdir(tmp_path)  # each spec's runs go to sweeps/<its name> here
    first_runs = [(tmp_path / "sweeps" / "first" / "CartPole-v1" / "adam" / f"seed_{s}").resolve() for s in (1, 2, 3)]
    second_run = (tmp_path / "sweeps" / "second" / "CartPole-v1" / "adam" / "seed_1").resolve()
    launched = []  # (run directory, the first sweep's runs that were complete at its launch)

    def command(agent, run):
        path = run.path.resolve()
        launched.append((path, {p for p in first_runs if (read_status(p) or {}).get("state") == "complete"}))
        return stand_in_run(path, pauses.get(f"{path.parent.parent.parent.name}/{path.name}", 0.3))

    monkeypatch.setattr(sweeps, "run_command", command)
    monkeypatch.setattr(sweeps, "run_queue", partial(sweeps.run_queue, poll_seconds=0.05))
    return first, second, first_runs, second_run, launched


def test_several_specs_form_a_queue_that_one_pool_runs_in_order(tmp_path, monkeypatch, clipzoo):
    first, second, first_runs, second_run, launched = queue_of_two(tmp_path, monkeypatch, {"first/seed_3": 1.0})
    code, out, err = clipzoo("sweep", str(first), str(second), "--workers", "2")
    assert code == 0, out + err
    assert [path for path, _ in launched] == [*first_runs, second_run]  # in the queue's order
    # the second sweep's run took a worker freed by the first sweep's runs 1-2 while its run 3 was
    # still running: no core waited for the first sweep to end
    assert first_runs[2] not in launched[3][1] and launched[3][1]
    assert "queue of 2 sweeps: 4 runs to run on 2 workers, in this order" in out
    progress = [line for line in out.splitlines() if "runs done" in line]
    assert all(line.startswith(("first: ", "second: ")) for line in progress), progress
    assert any(line.startswith("first: 0/3 runs done; running: CartPole-v1/adam/seed_1 100/300") for line in progress)
    second_lines = [line for line in progress if line.startswith("second: ")]
    assert second_lines[0].startswith("second: 0/1 runs done; running: CartPole-v1/adam/seed_1 100/300, ETA")
    assert progress[-2:] == ["first: 3/3 runs done", "second: 1/1 runs done"]  # each sweep's last line
    assert "sweep first: 3/3 complete" in out and "sweep second: 1/1 complete" in out

    code, out, _ = clipzoo("sweep", str(first), str(second), "--workers", "2")  # all done: nothing to run
    assert code == 0 and "sweep first: 3 runs, 3 already complete, 0 to run" in out and len(launched) == 4
    for name in ("first", "second"):  # on SLURM, an array job per spec
        (tmp_path / "sweeps" / name / "CartPole-v1" / "adam" / "seed_1" / "status.json").unlink()
    code, _, err = clipzoo("sweep", str(first), str(second), "--backend", "slurm", "--dry-run")
    assert code == 0, err
    for name in ("first", "second"):
        tasks = (tmp_path / "sweeps" / name / "slurm" / "tasks_0.txt").read_text().split()
        assert tasks == [str((tmp_path / "sweeps" / name / "CartPole-v1" / "adam" / "seed_1").resolve())]
    for argv, message in [
        ((str(first), str(second), "--dir", "elsewhere"), "--dir applies to one spec; with 2 specs"),
        ((str(first), str(second), "--variant", "adam"), "--variant applies to one spec"),
        ((str(first), str(first)), "and an earlier spec of the queue both write to"),
    ]:
        code, _, err = clipzoo("sweep", *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_sigterm_to_a_queue_stops_it_before_the_next_sweep_and_the_runs_in_flight_stop(tmp_path, monkeypatch, clipzoo):
    import threading

    long = {f"first/seed_{s}": 60.0 for s in (1, 2, 3)}
    first, second, first_runs, second_run, launched = queue_of_two(tmp_path, monkeypatch, long)

    def terminate_once_two_run():
        deadline = time.time() + 60
        while time.time() < deadline:
            if sum((read_status(p) or {}).get("state") == "running" for p in first_runs) == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # the sweep's own handler takes it
                return
            time.sleep(0.05)

    threading.Thread(target=terminate_once_two_run, daemon=True).start()
    code, out, _ = clipzoo("sweep", str(first), str(second), "--workers", "2")
    assert code == 128 + signal.SIGTERM
    assert "SIGTERM: starting no more runs" in out
    assert [path for path, _ in launched] == first_runs[:2]  # neither the third run nor the next sweep started
    assert [read_status(p)["state"] for p in first_runs[:2]] == ["interrupted", "interrupted"]
    assert read_status(first_runs[2]) is None and read_status(second_run) is None
    assert "pending: " in out and "sweep second: 0/1 complete" in out
    assert "\nsecond: 0/1 runs done\n" in out  # the last progress line of a sweep that never started


SHIPPED = sorted(path.stem for path in (REPO / "configs" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_sweep_specs_validate(tmp_path, name):
    sweep = load_spec(REPO / "configs" / "sweeps" / f"{name}.yaml", tmp_path)
    assert sweep.runs and len({run.path for run in sweep.runs}) == len(sweep.runs)


def test_successive_regularization_study_is_the_papers_grid(tmp_path):
    sweep = load_spec(REPO / "configs" / "sweeps" / "successive_reg_dqn.yaml", tmp_path)
    variants = {run.variant: run.options for run in sweep.runs if run.env == "LunarLander-v3" and run.seed == 1}
    assert len(variants) == 1 + 3 * 3 * 2  # none, then R x delta x (every update, target updates)
    assert {(o.get("reg"), o.get("reg_delta"), o.get("reg_every", 1)) for o in variants.values()} == {
        (None, None, 1),
        *((r, d, e) for r in ("l2", "l2_init", "singular") for d in (0.75, 1.0, 1.25) for e in (1, "target")),
    }
    # Teo et al. (Sec. 5.1): 100,000 steps in every env, Adam at lr 1e-3
    assert {run.options["total_timesteps"] for run in sweep.runs} == {100000}
    assert {run.options["learning_rate"] for run in sweep.runs} == {0.001}


def run_shipped_sweep(clipzoo, name: str, directory: Path, runs: int, metric: str) -> str:
    """Run every run of a shipped spec as the sweep launches it (``train AGENT --config run.yaml``),
    in this process: the local executor itself is tested above. Returns ``clipzoo table`` of ``metric``."""
    code, _, err = clipzoo(
        "sweep", str(REPO / "configs" / "sweeps" / f"{name}.yaml"), "--dry-run", "--dir", str(directory)
    )
    assert code == 0, err
    manifest = json.loads((directory / "manifest.json").read_text())
    assert len(manifest["runs"]) == runs
    for run in manifest["runs"]:
        path = directory / run["path"]
        code, _, err = clipzoo("train", manifest["agent"], "--config", str(path / "run.yaml"), "--run-dir", str(path))
        assert code == 0, err
    code, out, _ = clipzoo("sweep", "status", str(directory))
    assert out.strip().endswith(f"{runs} complete"), out
    code, table, err = clipzoo("table", str(directory), "--metric", metric)
    assert code == 0, err
    return table


@pytest.mark.slow
def test_plug_in_variants_run_in_a_sweep(tmp_path, clipzoo):
    table = run_shipped_sweep(clipzoo, "tiny_interventions", tmp_path, runs=5, metric="losses/td_loss")
    for variant in ("l2_init_successive_target", "singular", "layer_norm+wc", "reset+shrink_perturb", "madam+probes"):
        assert f"| CartPole-v1 | {variant} |" in table
    probed = EventAccumulator(str(tmp_path / "CartPole-v1" / "madam+probes" / "seed_1")).Reload().Tags()["scalars"]
    assert {"plasticity/plasticity", "sharpness/lambda_max"} <= set(probed)


@pytest.mark.slow
def test_tiny_ppo_sweep_runs_to_completion(tmp_path, clipzoo):
    assert "| Hopper-v5 | adam+wc |" in run_shipped_sweep(
        clipzoo, "tiny_ppo", tmp_path, runs=4, metric="losses/approx_kl"
    )
