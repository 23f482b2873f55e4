"""The agents ``clipzoo`` knows, by name, and the agent- and env-side code the commands use.

``runners/`` has two layers: ``runners/base/`` (errors, files, config, run directories, random
streams, console, tracking), which ``agents/`` and ``envs/`` import, and the commands above them
(``cli``, ``sweep``, ``slurm``, ``plots``, ``aggregates``), which reach ``agents/`` and ``envs/``
only through this registry. Each import is inside the function that needs it, so ``clipzoo
--help``, ``clipzoo sweep status`` and ``clipzoo train dqn --help`` never import torch models.
"""

from __future__ import annotations

from types import ModuleType

AGENTS = ("ppo", "dqn", "rainbow")  # each agent's module also runs on its own: python -m agents.dqn


def agent_module(name: str) -> ModuleType:
    """The module with agent ``name``'s ``main(argv)``."""
    if name == "ppo":
        from agents import ppo_continuous as module
    elif name == "dqn":
        from agents import dqn as module
    elif name == "rainbow":
        from agents import rainbow as module
    else:
        raise KeyError(name)
    return module


def args_class(name: str) -> type:
    """The ``Args`` dataclass of agent ``name``: every option it takes, with its default. DQN's and
    Rainbow's live apart from Tianshou (``agents/qlearning/options.py``); PPO's file is one single file."""
    if name == "ppo":
        from agents.ppo_continuous import Args
    elif name == "dqn":
        from agents.qlearning.options import DQNArgs as Args
    elif name == "rainbow":
        from agents.qlearning.options import RainbowArgs as Args
    else:
        raise KeyError(name)
    return Args


def check_run_options(name: str, args) -> None:
    """The agent's own checks of a run's options, as ``clipzoo train`` makes them first."""
    if name == "ppo":
        from agents.ppo_continuous import check_args
    else:
        from agents.qlearning.options import check_args  # no torch or Tianshou: a sweep's checks start fast
    check_args(args)


def check_env_id(env_id: str) -> None:
    """Refuse an env id that gymnasium (with ale-py and MuJoCo registered) does not know."""
    from envs.registry import check_env_id

    check_env_id(env_id)


def gradient_covariance_module() -> ModuleType:
    """The gradient covariance diagnostics (``covariance_summary`` and the rest)."""
    from agents.diagnostics import gradcov

    return gradcov


def heatmap_drawing() -> ModuleType:
    """The gradient covariance heatmap's colour map and cluster ordering (``COLORMAP``, ``reorder``)."""
    from agents.diagnostics import heatmap

    return heatmap
