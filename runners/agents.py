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


# agent name -> (module, class) of its options: DQN's and Rainbow's live apart from Tianshou, so
# ``clipzoo train dqn --help`` and a sweep's validation do not import it (PPO's file is one single file)
OPTIONS = {
    "ppo": ("agents.ppo_continuous", "Args"),
    "dqn": ("agents.options", "DQNArgs"),
    "rainbow": ("agents.options", "RainbowArgs"),
}


# agent name -> module whose ``check_args(args)`` refuses impossible options (what ``train`` checks first)
OPTION_CHECKS = {
    "ppo": "agents.ppo_continuous",
    "dqn": "agents.qlearning",
    "rainbow": "agents.qlearning",
}


def agent_module(name: str) -> ModuleType:
    return importlib.import_module(AGENTS[name])


def args_class(name: str) -> type:
    """The ``Args`` dataclass of agent ``name``: every option it takes, with its default."""
    module, name = OPTIONS[name]
    return getattr(importlib.import_module(module), name)


def check_run_options(name: str, args) -> None:
    """The agent's own checks of a run's options, as ``clipzoo train`` makes them."""
    importlib.import_module(OPTION_CHECKS[name]).check_args(args)


def check_env_id(env_id: str) -> None:
    """Refuse an env id that gymnasium (with ale-py and MuJoCo registered) does not know."""
    importlib.import_module("envs.registry").check_env_id(env_id)


def gradient_covariance_module() -> ModuleType:
    """The gradient covariance diagnostics (``covariance_summary`` and the rest)."""
    return importlib.import_module("agents.diagnostics.gradcov")


def heatmap_drawing() -> ModuleType:
    """The gradient covariance heatmap's colour map and cluster ordering (``COLORMAP``, ``reorder``)."""
    return importlib.import_module("agents.diagnostics.heatmap")
