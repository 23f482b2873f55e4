"""Every number regenerable: one run of each study family, with its spec's own settings at a
small budget (plug-ins, diagnostics and probes on), must give bitwise the final weights and
TensorBoard scalars recorded in ``tests/golden_runs.json``.

Bitwise equality holds on one kind of CPU, not across kinds: MKL picks its kernels by CPU
vendor and model, and PPO's fingerprint differs between the machine the fingerprints were first
written on and an AMD EPYC one running the same code and packages (the Q-learning families' do not;
on the AMD machine, ``MKL_CBWR`` moves PPO's fingerprint and torch's ``ATEN_CPU_CAPABILITY`` does
not). So each case keeps a list of fingerprints, each with the machines it was seen on, and a run
must reproduce one of them.

The fingerprints change only with a commit that changes what is learned on purpose (a
correctness fix), which regenerates them (for this machine; the others' entries go) and says why:

    python tests/test_golden_runs.py --write

A machine kind not yet listed adds its own, at a commit that passes on a listed machine:

    python tests/test_golden_runs.py --add-machine

A refactor leaves every fingerprint as it is.
"""

from __future__ import annotations

import hashlib
import json
import platform
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


def this_machine() -> str:
    """The CPU a fingerprint was made on, as MKL and torch's kernel dispatch tell CPUs apart."""
    cpuinfo = Path("/proc/cpuinfo")
    fields = {}
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    cpu = " ".join(filter(None, (fields.get("vendor_id"), fields.get("model name")))) or platform.processor()
    return f"{cpu} ({torch.backends.cpu.get_cpu_capability()})"


def without_machines(entry: dict) -> dict:
    return {key: value for key, value in entry.items() if key != "machines"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_a_small_run_of_each_study_family_reproduces_its_recorded_fingerprint(tmp_path, name):
    recorded = json.loads(GOLDEN.read_text())[name]
    seen = run_case(name, tmp_path)
    assert any(seen == without_machines(entry) for entry in recorded), (
        f"{name} reproduces none of its recorded fingerprints on {this_machine()} (recorded on: "
        f"{'; '.join(machine for entry in recorded for machine in entry['machines'])}); only a correctness fix "
        f"may change it (python tests/test_golden_runs.py --write, in its own commit); a machine kind not yet "
        f"listed adds its own with --add-machine at a commit that passes on a listed one"
    )


def record(replace: bool) -> None:
    """--write (replace): this machine's fingerprints only; --add-machine: add this machine to the lists."""
    sys.path.insert(0, str(REPO))
    torch.set_num_threads(1)
    machine = this_machine()
    golden = {} if replace else json.loads(GOLDEN.read_text())
    with tempfile.TemporaryDirectory() as scratch:
        for name in CASES:
            seen = run_case(name, Path(scratch) / name)
            entries = golden.setdefault(name, [])
            match = next((entry for entry in entries if without_machines(entry) == seen), None)
            if match is None:
                entries.append({"machines": [machine], **seen})
            elif machine not in match["machines"]:
                match["machines"].append(machine)
    from runners.base.files import atomic_write_text

    atomic_write_text(GOLDEN, json.dumps(golden, indent=2, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({machine})")


if __name__ == "__main__":
    if sys.argv[1:] not in (["--write"], ["--add-machine"]):
        sys.exit("usage: python tests/test_golden_runs.py --write | --add-machine")
    record(replace=sys.argv[1] == "--write")
