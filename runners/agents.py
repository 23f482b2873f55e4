"""The agents ``clipzoo`` knows, by name, and the agent- and env-side code that runners use.

``runners/`` is the lowest layer: the command line, sweeps, SLURM and plots reach
``agents/`` and ``envs/`` only through this registry, by module path, imported when first
needed (so ``clipzoo --help`` or ``clipzoo sweep status`` never imports torch models).
"""

from __future__ import annotations

import importlib
from types import ModuleType

# agent name -> module with ``Args`` (its options) and ``main(argv)``; each module runs on its own too
AGENTS = {
    "ppo": "agents.ppo_continuous",
    "dqn": "agents.dqn",
    "rainbow": "agents.rainbow",
}


def agent_module(name: str) -> ModuleType:
    return importlib.import_module(AGENTS[name])


def args_class(name: str) -> type:
    """The ``Args`` dataclass of agent ``name``: every option it takes, with its default."""
    return agent_module(name).Args


def check_env_id(env_id: str) -> None:
    """Refuse an env id that gymnasium (with ale-py and MuJoCo registered) does not know."""
    importlib.import_module("envs.registry").check_env_id(env_id)


def heatmap_drawing() -> ModuleType:
    """The gradient covariance heatmap's colour map and cluster ordering (``COLORMAP``, ``reorder``)."""
    return importlib.import_module("agents.diagnostics.heatmap")
