"""scripts/regenerate-figures.sh: every committed file of docs/figures/ is written by one of its
commands under its committed name, and sweeps that are absent are skipped, never half-written."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "regenerate-figures.sh"
FIGURES = ROOT / "docs" / "figures"


def script_commands() -> list[list[str]]:
    """Each ``zoo SPEC SWEEP_DIR COMMAND ARGS...`` line of the script, split as the shell would
    (continuation lines joined, comments dropped; variables stay unexpanded)."""
    text = re.sub(r"\\\n", " ", SCRIPT.read_text())
    commands = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["zoo"]:
            commands.append(words)
    return commands


def outputs(words: list[str]) -> list[str]:
    """The files a ``zoo`` line writes, as runners/cli.py names them: ``plot --out X.png`` writes
    X.png and X.csv beside it, ``table --csv X`` and ``heatmap --out X`` write X (``table
    --compare`` would add X_compare.csv)."""
    command, args = words[3], words[4:]
    written = []
    for flag, value in zip(args, args[1:]):
        if (flag == "--out" and command in ("plot", "heatmap")) or (flag == "--csv" and command == "table"):
            written.append(value)
            if command == "plot":
                written.append(str(Path(value).with_suffix(".csv")))
            if command == "table" and "--compare" in args:
                written.append(str(Path(value).with_name(Path(value).stem + "_compare.csv")))
    return written


def script_outputs() -> dict[str, str]:
    """Committed name -> the sweep spec of the command that writes it."""
    named = {}
    for words in script_commands():
        for path in outputs(words):
            assert path.startswith("$FIGURES/"), f"{path} is not written into FIGURES_DIR: {' '.join(words)}"
            name = path.removeprefix("$FIGURES/")
            assert name not in named, f"{name} is written by two commands"
            named[name] = words[1]
    return named


def run_script(sweeps: Path, figures: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "FIGURES_DIR": str(figures), "CLIPZOO": f"{sys.executable} -m runners.cli"}
    return subprocess.run(
        ["bash", str(SCRIPT), str(sweeps)], capture_output=True, text=True, env=environment, cwd=ROOT, timeout=600
    )


def digest(directory: Path) -> dict[str, str]:
    """Every file under `directory`, subfolders included (docs/figures/in_progress/), by relative path."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_the_script_is_executable_bash_with_strict_mode():
    assert os.access(SCRIPT, os.X_OK)
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


# Committed files that no clipzoo command writes. Empty since claim 0's rerun replaced the record made
# outside the zoo (its ppo_gap_* files are in the history); every committed file must have its command,
# and this list may only shrink.
BUILT_OUTSIDE_THE_TOOL: set[str] = set()

# Written by the script once their sweeps have run (claims 4b, 6 and 7 are new; the per-run
# CSVs of claim 1 come with its rerun). This list may only shrink.
NOT_YET_WRITTEN = {
    "repro_ppo_policy_collapse_runs.csv",
    "repro_ppo_policy_collapse_constant_lr_runs.csv",
    "repro_lyle_classification_plasticity.png",
    "repro_lyle_classification_plasticity.csv",
    "repro_lyle_classification_runs.csv",
    "redo_minatar_breakout.png",
    "redo_minatar_breakout.csv",
    "redo_minatar_breakout_runs.csv",
}


def test_every_committed_figure_and_csv_is_written_by_a_command_of_the_script():
    committed = {p.name for p in FIGURES.iterdir() if p.is_file()}
    written = set(script_outputs())
    without_command = sorted(committed - written - BUILT_OUTSIDE_THE_TOOL)
    assert not without_command, (
        f"committed in docs/figures/ but written by no command of {SCRIPT.name}: {without_command}"
    )
    assert BUILT_OUTSIDE_THE_TOOL <= committed - written, "a file of the exception list is gone or now has a command"
    assert not written - committed - NOT_YET_WRITTEN, (
        f"written by the script but not committed: {sorted(written - committed - NOT_YET_WRITTEN)}"
    )
    assert NOT_YET_WRITTEN <= written - committed, "a file of the not-yet list is committed now: strike it"


def test_on_an_empty_sweeps_directory_it_skips_every_file_and_writes_nothing(tmp_path):
    before = digest(FIGURES)
    sweeps, figures = tmp_path / "sweeps", tmp_path / "figures"
    sweeps.mkdir()
    result = run_script(sweeps, figures)
    assert result.returncode == 0, result.stderr
    skipped = re.findall(
        r"^skipped (\S+): (\S+) not found \(run its spec first: clipzoo sweep "
        r"configs/sweeps/(\S+)\.yaml\)$",
        result.stdout,
        re.MULTILINE,
    )
    assert len(skipped) == len(result.stdout.splitlines()), result.stdout
    expected = script_outputs()
    assert sorted(Path(file).name for file, _, _ in skipped) == sorted(expected)
    for file, sweep, spec in skipped:
        assert Path(file).parent == figures
        assert sweep == str(sweeps / spec)
        assert (ROOT / "configs" / "sweeps" / f"{spec}.yaml").is_file()
    assert {spec for _, _, spec in skipped} == set(expected.values())
    assert all(expected[Path(file).name] == spec for file, _, spec in skipped)
    assert not figures.exists()
    assert digest(FIGURES) == before


def make_kappa_sweep(root: Path) -> None:
    """A tiny stand-in for sweeps/repro_wc_kappa_cartpole: 2 variants x 2 seeds, both metrics."""
    for variant in ("adam", "wc_k2"):
        for seed in (1, 2):
            run = root / "CartPole-v1" / variant / f"seed_{seed}"
            run.mkdir(parents=True)
            (run / "config.json").write_text(json.dumps({"env_id": "CartPole-v1", "seed": seed}))
            (run / "status.json").write_text(json.dumps({"state": "complete", "global_step": 1000}))
            with SummaryWriter(str(run)) as writer:
                for step in range(0, 1001, 100):
                    writer.add_scalar("charts/episodic_return", seed + step / 10, step)
                    writer.add_scalar("losses/q_values", seed + step / 100, step)
                    if variant == "wc_k2":
                        writer.add_scalar("wc/clipped_fraction", 0.01 * seed, step)


@pytest.mark.slow
def test_a_sweep_that_is_present_is_regenerated_under_the_committed_names(tmp_path):
    before = digest(FIGURES)
    sweeps, figures = tmp_path / "sweeps", tmp_path / "figures"
    make_kappa_sweep(sweeps / "repro_wc_kappa_cartpole")
    result = run_script(sweeps, figures)
    assert result.returncode == 0, result.stdout + result.stderr
    kappa = {name for name, spec in script_outputs().items() if spec == "repro_wc_kappa_cartpole"}
    assert kappa == {
        "repro_wc_kappa_episodic_return.png",
        "repro_wc_kappa_episodic_return.csv",
        "repro_wc_kappa_q_values.png",
        "repro_wc_kappa_q_values.csv",
        "repro_wc_kappa_runs.csv",
    }
    assert {p.name for p in figures.iterdir()} == kappa
    assert (figures / "repro_wc_kappa_q_values.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "losses/q_values" in (figures / "repro_wc_kappa_q_values.csv").read_text()
    runs = (figures / "repro_wc_kappa_runs.csv").read_text()
    assert all(tag in runs for tag in ("charts/episodic_return", "losses/q_values", "wc/clipped_fraction")), runs[:300]
    skipped = [line for line in result.stdout.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == len(script_outputs()) - len(kappa)
    assert not any("repro_wc_kappa" in line for line in skipped)
    assert digest(FIGURES) == before


def test_a_command_that_fails_fails_the_script(tmp_path):
    sweeps, figures = tmp_path / "sweeps", tmp_path / "figures"
    (sweeps / "repro_wc_kappa_cartpole").mkdir(parents=True)  # present, but holds no runs
    result = run_script(sweeps, figures)
    assert result.returncode != 0
    assert "no runs" in result.stderr
    assert not any(figures.iterdir())
