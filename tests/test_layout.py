"""The package layering: ``runners/base/`` at the bottom, then ``envs/`` and ``agents/``, then the commands of
``runners/``, which reach the agents only through the registry; every import points down."""

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
    """Module -> the runners modules it imports, over both layers (``base.rng``, ``cli``, ...)."""
    names = {path.relative_to(REPO / "runners").with_suffix("").as_posix().replace("/", "."): path for path in RUNNERS}
    return {
        name: {m.removeprefix("runners.") for m in imported_modules(path) if m.removeprefix("runners.") in names}
        for name, path in names.items()
    }


RUNNERS = sorted(p for p in (REPO / "runners").rglob("*.py") if p.name != "__init__.py")
BASE = [p for p in RUNNERS if p.parent.name == "base"]
TOP = [p for p in RUNNERS if p.parent.name != "base"]


def test_the_commands_import_agents_and_envs_only_through_the_registry():
    registry = REPO / "runners" / "registry.py"
    assert registry in TOP
    for path in TOP:
        reaching_up = sorted(m for m in imported_modules(path) if m.split(".")[0] in ("agents", "envs"))
        if path == registry:
            assert reaching_up, "the registry imports the agents; the test would not see them"
            continue
        assert not reaching_up, f"{path.name} imports {reaching_up}; go through runners/registry.py"


def test_the_base_of_runners_imports_nothing_above_it():
    assert {p.stem for p in BASE} >= {"errors", "files", "config", "rundir", "rng", "console", "tracking"}
    for path in BASE:
        above = sorted(
            m
            for m in imported_modules(path)
            if m.split(".")[0] in ("agents", "envs") or (m.startswith("runners.") and not m.startswith("runners.base"))
        )
        assert not above, f"runners/base/{path.name} imports {above}; the base sits below agents, envs and the commands"


def test_runners_modules_import_each_other_without_a_cycle():
    graph = runners_graph()
    assert "base.rng" in graph and "cli" in graph

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join(path + (name,))}"
        for imported in graph[name] - {name}:
            visit(imported, path + (name,))

    for name in graph:
        visit(name, ())


def test_no_module_imports_by_name_at_run_time():
    """``importlib`` would hide an import from the tests above (the old registry hid a cycle so)."""
    for path in [*RUNNERS, *(REPO / "agents").rglob("*.py"), *(REPO / "envs").glob("*.py")]:
        text = path.read_text()
        assert "importlib" not in text and "__import__" not in text, f"{path.relative_to(REPO)} imports by name"


def test_agents_and_envs_import_only_the_base_of_runners():
    """The agents and envs sit above ``runners/base/`` and below the commands: importing a command
    from an agent would close a cycle (the commands load the agents through the registry)."""
    for path in [*(REPO / "agents").rglob("*.py"), *(REPO / "envs").glob("*.py")]:
        top = sorted(m for m in imported_modules(path) if m.startswith("runners") and not m.startswith("runners.base"))
        assert not top, f"{path.relative_to(REPO)} imports {top}; agents and envs use runners/base/ only"


# The private attributes of Tianshou that agents/qlearning/tianshou_internals.py reaches; nowhere else in the code.
TIANSHOU_PRIVATE = (
    "_random_state _insertion_idx _save_obs_next _indices _meta _offset _weight_norm _beta _iter _optim "
    "_current_update_step _env_step _logger _pre_collect_obs_RO _pre_collect_info_R _pre_collect_hidden_state_RH"
).split()


def test_private_tianshou_attributes_are_reached_only_through_the_adapter():
    adapter = REPO / "agents" / "qlearning" / "tianshou_internals.py"
    adapter_names = {node.attr for node in ast.walk(ast.parse(adapter.read_text())) if isinstance(node, ast.Attribute)}
    assert set(TIANSHOU_PRIVATE) <= adapter_names, "the list above names an attribute the adapter does not reach"
    for path in [*(REPO / "agents").rglob("*.py"), *RUNNERS]:
        if path == adapter:
            continue
        reached = {
            node.attr
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and node.attr in TIANSHOU_PRIVATE
        }
        assert not reached, (
            f"{path.relative_to(REPO)} reaches {sorted(reached)}; use agents/qlearning/tianshou_internals.py"
        )


@pytest.mark.parametrize(
    "module, allowed",
    [
        ("agents/plugins/options.py", {"runners.base.errors"}),
        ("agents/qlearning/options.py", {"agents.plugins.options", "runners.base.errors", "runners.base.tracking"}),
    ],
)
def test_the_options_modules_import_neither_torch_nor_tianshou(module, allowed):
    project = {m for m in imported_modules(REPO / module) if (REPO / m.replace(".", "/")).with_suffix(".py").exists()}
    assert project == allowed, project
    for dotted in allowed | {module.removesuffix(".py").replace("/", ".")}:
        parts = dotted.split(".")
        for depth in range(1, len(parts)):  # every package above it runs its __init__ first
            init = REPO.joinpath(*parts[:depth], "__init__.py")
            assert not imported_modules(init), f"{init.relative_to(REPO)} imports; importing the options would run it"


def test_the_options_and_a_runs_checks_load_neither_torch_nor_tianshou():
    # what `clipzoo train dqn --help` and a sweep's checks of each of its runs do; only --device cuda needs torch
    probe = (
        "import sys\n"
        "from agents.qlearning.options import DQNArgs, RainbowArgs, check_args\n"
        "check_args(DQNArgs(env_id='CartPole-v1')); check_args(RainbowArgs())\n"
        "print(sorted(m for m in ('torch', 'tianshou', 'numpy', 'gymnasium') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "[]", result.stdout


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


ALGORITHMS = ("agents.ppo_continuous", "agents.dqn", "agents.rainbow")
NEVER = [
    # (files, module prefixes they may not import, why)
    ("agents/plugins", ("agents.qlearning", *ALGORITHMS), "the plug-ins know no agent"),
    ("agents/plugins/clipping.py", ("agents", "envs", "runners"), "weight clipping imports nothing of the zoo"),
    (
        "agents/diagnostics",
        ("agents.qlearning", "agents.plugins", *ALGORITHMS),
        "the measurements know no agent or plug-in",
    ),
    ("agents/qlearning", ALGORITHMS, "the shared Q-learning run knows no algorithm (they hand it an AgentSpec)"),
    ("envs", ("agents",), "the envs know no agent"),
]


@pytest.mark.parametrize("where, forbidden, why", NEVER, ids=[n[0] for n in NEVER])
def test_no_room_imports_what_it_must_not(where, forbidden, why):
    paths = [REPO / where] if where.endswith(".py") else sorted((REPO / where).rglob("*.py"))
    assert paths and all(p.exists() for p in paths)
    for path in paths:
        bad = sorted(m for m in imported_modules(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        assert not bad, f"{path.relative_to(REPO)} imports {bad}: {why}"
