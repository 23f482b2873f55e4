"""Checks env ids against gymnasium's registry (ALE and MinAtar games and the classification MDPs included) with close-match suggestions."""

from __future__ import annotations

import difflib
from functools import cache

import gymnasium as gym

from envs.minatar import MINATAR_NAMESPACE, register_minatar_envs
from envs.state import require_capturable_class
from runners.base.errors import UsageError


@cache
def _register_ale_and_classification_envs() -> None:
    import ale_py  # registers the ALE/* ids

    from envs.classification import register_classification_envs

    gym.register_envs(ale_py)
    register_classification_envs()


@cache
def registered_env_ids() -> tuple[str, ...]:
    """Every id gymnasium knows, MinAtar's included."""
    _register_ale_and_classification_envs()
    register_minatar_envs()
    return tuple(sorted(gym.registry))


def check_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
    """The spec of a registered env id whose state a checkpoint can hold (by its class, before it
    is built: a sweep refuses it before its runs start), or a UsageError naming the closest ids.
    The MinAtar package is imported only for a MinAtar id or an unknown one: it imports seaborn
    and scipy, seconds of every other run's start-up."""
    _register_ale_and_classification_envs()
    if env_id.startswith(MINATAR_NAMESPACE):
        register_minatar_envs()
    if env_id in gym.registry:
        spec = gym.spec(env_id)
        require_capturable_class(env_id, spec.entry_point)
        return spec
    ids = registered_env_ids()
    close = difflib.get_close_matches(env_id, ids, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UsageError(f"unknown env id {env_id!r}{hint}")


def require_continuous_actions(env_id: str, action_space: gym.Space) -> None:
    if not isinstance(action_space, gym.spaces.Box):
        raise UsageError(
            f"{env_id} has a {type(action_space).__name__} action space; this agent needs continuous (Box) actions"
        )


def require_discrete_actions(env_id: str, action_space: gym.Space) -> None:
    if not isinstance(action_space, gym.spaces.Discrete):
        raise UsageError(
            f"{env_id} has a {type(action_space).__name__} action space; this agent needs discrete actions"
        )
