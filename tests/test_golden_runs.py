"""Every number regenerable: one run of each study family, with its spec's own settings at a
small budget (plug-ins, diagnostics and probes on), must give bitwise the final weights and
TensorBoard scalars recorded in ``tests/golden_runs.json``.

The fingerprints change only with a commit that changes what is learned on purpose (a
correctness fix), which regenerates them and says why:

    python tests/test_golden_runs.py --write

A refactor leaves every fingerprint as it is.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).with_name("golden_runs.json")
TIMING_TAGS = {"charts/SPS", "charts/gradient_steps_per_second"}
SMALL_Q = {
    "log_every": 100,
    "diagnostics_every": 200,
    "heatmap_every": 400,
    "checkpoint_every": 300,
    "eval_every": 300,
    "eval_episodes": 2,
}
# (spec, env, variant, agent, overrides: the budget and intervals that fit it, and the probes' sizes)
CASES = {
    "ppo_policy_collapse": (
        "repro_ppo_policy_collapse",
        "Hopper-v5",
        "adam+wc",
        "ppo",
        {
            "total_timesteps": 4096,
            "heatmap_every": 2,
            "eval_every": 2048,
            "eval_episodes": 2,
            "sp_every": 100,
            "compile": False,
        },
    ),
    "dqn_minatar_rr8": (
        "repro_minatar_rr_dqn",
        "MinAtar/Breakout-v1",
        "rr8_adam+wc",
        "dqn",
        {"total_timesteps": 1800, **SMALL_Q, "learning_starts": 1600},
    ),
    "rainbow_minatar_rr1": (
        "repro_minatar_rr_rainbow",
        "MinAtar/Breakout-v1",
        "rr1_adam+wc",
        "rainbow",
        {"total_timesteps": 2000, **SMALL_Q},
    ),
    "dqn_cartpole_kappa": ("repro_wc_kappa_cartpole", "CartPole-v1", None, "dqn", {"total_timesteps": 1200, **SMALL_Q}),
    "dqn_successive_reg": (
        "repro_successive_reg",
        "CartPole-v1",
        "singular_successive",
        "dqn",
        {"total_timesteps": 1200, **SMALL_Q},
    ),
    "dqn_successive_reg_lunarlander": (  # 600 gradient steps: one target update, so one penalty step of its own
        "repro_successive_reg_lunarlander",
        "LunarLander-v3",
        "l2_init_d1.25_target",
        "dqn",
        {"total_timesteps": 1600, **SMALL_Q},
    ),
    "dqn_redo_minatar": (  # 1,600 gradient steps at RR 8: one recycling
        "redo_minatar_breakout",
        "MinAtar/Breakout-v1",
        "adam+redo",
        "dqn",
        {"total_timesteps": 1800, **SMALL_Q, "learning_starts": 1600},
    ),
    "dqn_lyle_classification": (
        "repro_lyle_classification",
        "Classification/Digits-TrueLabel-v0",
        "wc",
        "dqn",
        {
            "total_timesteps": 1600,
            **SMALL_Q,
            "plasticity_probe_every": 500,
            "plasticity_probe_steps": 50,
            "plasticity_probe_targets": 2,
        },
    ),
}


def spec_run(spec: str, env: str, variant: str | None):
    from runners.sweep import load_spec

    sweep = load_spec(REPO / "configs" / "sweeps" / f"{spec}.yaml", Path(tempfile.mkdtemp()) / "sweep")
    runs = [
        run for run in sweep.runs if run.env == env and run.seed == 1 and (variant is None or run.variant == variant)
    ]
    return runs[-1] if variant is None else runs[0]  # no variant named: the spec's last one


def fingerprint(run_dir: Path, weights_key: str) -> dict:
    weights = torch.load(run_dir / "model.pt", weights_only=False)[weights_key]
    weight_hash = hashlib.sha256()
    for name in sorted(weights):
        weight_hash.update(name.encode() + weights[name].detach().cpu().contiguous().numpy().tobytes())
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    scalar_hash, points = hashlib.sha256(), 0
    for tag in sorted(set(events.Tags()["scalars"]) - TIMING_TAGS):
        for event in events.Scalars(tag):
            scalar_hash.update(tag.encode() + struct.pack("<qd", event.step, event.value))
            points += 1
    return {"weights": weight_hash.hexdigest(), "scalars": scalar_hash.hexdigest(), "scalar_points": points}


def run_case(name: str, directory: Path) -> dict:
    from agents import dqn, ppo_continuous, rainbow

    spec, env, variant, agent, overrides = CASES[name]
    options = {**spec_run(spec, env, variant).options, **overrides}
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "run.yaml"
    config.write_text(yaml.safe_dump(options, sort_keys=True))
    module = {"ppo": ppo_continuous, "dqn": dqn, "rainbow": rainbow}[agent]
    module.main(["--config", str(config), "--run-dir", str(directory / "run")])
    return fingerprint(directory / "run", "agent" if agent == "ppo" else "network")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_a_small_run_of_each_study_family_reproduces_its_recorded_fingerprint(tmp_path, name):
    recorded = json.loads(GOLDEN.read_text())[name]
    assert run_case(name, tmp_path) == recorded, (
        f"{name} no longer reproduces bitwise; only a correctness fix may "
        f"change it (python tests/test_golden_runs.py --write, in its own commit)"
    )


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    sys.path.insert(0, str(REPO))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        golden = {name: run_case(name, Path(scratch) / name) for name in CASES}
    GOLDEN.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
