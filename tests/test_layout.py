"""The package layering: ``runners/`` is the lowest layer and its modules import in one direction."""

from __future__ import annotations

import ast
from pathlib import Path

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
