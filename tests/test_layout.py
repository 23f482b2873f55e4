"""The package layering: ``runners/`` is the lowest layer and its modules import in one direction."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def runners_graph() -> dict[str, set[str]]:
    names = {path.stem: path for path in (REPO / "runners").glob("*.py")}
    return {
        name: {m.split(".")[1] for m in imported_modules(path) if m.startswith("runners.") and m.split(".")[1] in names}
        for name, path in names.items()
    }


def test_runners_import_agents_and_envs_only_through_the_registry():
    for path in (REPO / "runners").glob("*.py"):
        reaching_up = sorted(m for m in imported_modules(path) if m.split(".")[0] in ("agents", "envs"))
        assert not reaching_up, f"{path.name} imports {reaching_up}; go through runners/agents.py"


def test_runners_modules_import_each_other_without_a_cycle():
    graph = runners_graph()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join(path + (name,))}"
        for imported in graph[name] - {name}:
            visit(imported, path + (name,))

    for name in graph:
        visit(name, ())


TOP_OF_RUNNERS = {"cli", "sweep", "slurm", "slurm_queue", "plots", "aggregates", "agents"}  # commands and the registry


def test_agents_and_envs_import_only_the_base_of_runners():
    """The agents and envs sit above ``runners``' base (errors, files, config, rundir, rng, console,
    tracking) and below its commands: importing a command from an agent would close a cycle
    (the commands load the agents through the registry)."""
    for path in [*(REPO / "agents").rglob("*.py"), *(REPO / "envs").glob("*.py")]:
        top = sorted(
            m for m in imported_modules(path) if m.startswith("runners.") and m.split(".")[1] in TOP_OF_RUNNERS
        )
        assert not top, f"{path.relative_to(REPO)} imports {top}, the top of runners/; use its base modules"


# The private attributes of Tianshou that agents/tianshou_internals.py reaches; nowhere else in the code.
TIANSHOU_PRIVATE = (
    "_random_state _insertion_idx _save_obs_next _indices _meta _offset _weight_norm _beta _iter _optim "
    "_current_update_step _env_step _logger _pre_collect_obs_RO _pre_collect_info_R _pre_collect_hidden_state_RH"
).split()


def test_private_tianshou_attributes_are_reached_only_through_the_adapter():
    adapter = REPO / "agents" / "tianshou_internals.py"
    adapter_names = {node.attr for node in ast.walk(ast.parse(adapter.read_text())) if isinstance(node, ast.Attribute)}
    assert set(TIANSHOU_PRIVATE) <= adapter_names, "the list above names an attribute the adapter does not reach"
    for path in [*(REPO / "agents").rglob("*.py"), *(REPO / "runners").glob("*.py")]:
        if path == adapter:
            continue
        reached = {
            node.attr
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and node.attr in TIANSHOU_PRIVATE
        }
        assert not reached, f"{path.relative_to(REPO)} reaches {sorted(reached)}; use agents/tianshou_internals.py"


def test_the_options_module_imports_neither_torch_nor_tianshou():
    imported = imported_modules(REPO / "agents" / "options.py")
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "tianshou", "numpy", "gymnasium"))
    assert not heavy, f"agents/options.py imports {heavy}; it must load without them (clipzoo train dqn --help)"
    project = sorted(m for m in imported if m.split(".")[0] in ("agents", "envs", "runners"))
    assert {m.removesuffix(".TrackingArgs") for m in project} == {"runners.tracking"}, project


@pytest.mark.parametrize("agent", ["dqn", "rainbow"])
def test_the_help_of_a_tianshou_agent_loads_no_tianshou_and_is_the_agent_s_own(agent, clipzoo, capsys):
    probe = (
        "import sys\nfrom runners import cli\ntry:\n    cli.main(['train', %r, '--help'])\nexcept SystemExit as e:\n"
        "    assert e.code == 0, e.code\nprint(sorted({'torch', 'tianshou'} & set(sys.modules)))" % agent
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    code, from_cli, _ = clipzoo("train", agent, "--help")
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(f"agents.{agent}").main(["--help"])  # the agent's own parser, Tianshou loaded
    assert code == 0 and exit_info.value.code == 0
    assert "--replay-ratio" in from_cli and from_cli == capsys.readouterr().out
