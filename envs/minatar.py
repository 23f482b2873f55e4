"""MinAtar (Young & Tian 2019): 10 x 10 miniatures of Asterix, Breakout, Freeway, Seaquest and
Space Invaders, from the ``minatar`` package, as gymnasium envs ``MinAtar/<Game>-v1``
(minimal action sets; ``-v0``: all 6 actions).

Each observation is a 10 x 10 x C grid of object channels (bool). The game is already small
and fully observed, so there are no Atari wrappers (no frame skip or stack, no reward
clipping, no life loss); the only change is channel-first order for the networks. The
grids stay bool (one byte per cell): the replay buffer stores them as they are and the
network casts to float. Sticky actions are the package's 0.1 unless asked otherwise.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import RecordEpisodeStatistics, TransformObservation

MINATAR_NAMESPACE = "MinAtar/"
STICKY_ACTIONS = 0.1  # MinAtar's default, used in the MinAtar paper's experiments
GRID = (10, 10)


def register_minatar_envs() -> None:
    """Adds the ``MinAtar/*`` ids to gymnasium's registry (once; importing the package takes
    seconds, so only a MinAtar id asks for it)."""
    if "MinAtar/Breakout-v1" not in gym.registry:
        import minatar.gym

        minatar.gym.register_envs()


def is_minatar(env_id: str) -> bool:
    if not env_id.startswith(MINATAR_NAMESPACE):
        return False
    register_minatar_envs()
    return env_id in gym.registry and str(gym.spec(env_id).entry_point).startswith("minatar.")


def make_minatar_env(env_id: str, sticky_actions: float | None = None) -> gym.Env:
    """One MinAtar game with channel-first bool observations and episode statistics."""
    register_minatar_envs()
    env = gym.make(env_id, sticky_action_prob=STICKY_ACTIONS if sticky_actions is None else sticky_actions)
    env = RecordEpisodeStatistics(env)
    height, width, channels = env.observation_space.shape
    channel_first = gym.spaces.Box(0, 1, (channels, height, width), dtype=bool)
    return TransformObservation(env, lambda obs: np.ascontiguousarray(obs.transpose(2, 0, 1)), channel_first)
