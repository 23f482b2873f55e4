"""Checks env ids against gymnasium's registry (ALE and MinAtar games and the classification MDPs included) with close-match suggestions."""

from __future__ import annotations

import difflib
from functools import cache

import gymnasium as gym

from runners.base.errors import UsageError


@cache
def registered_env_ids() -> tuple[str, ...]:
    import ale_py  # registers the ALE/* ids

    from envs.classification import register_classification_envs
    from envs.minatar import register_minatar_envs

    gym.register_envs(ale_py)
    register_minatar_envs()
    register_classification_envs()
    return tuple(sorted(gym.registry))


def check_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
    """The spec of a registered env id, or a UsageError naming the closest ids."""
    ids = registered_env_ids()
    if env_id in ids:
        return gym.spec(env_id)
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
