"""Discrete-action envs for DQN and Rainbow: Atari with DeepMind-style wrappers, MinAtar
(``envs.minatar``: channel-first grids, no wrappers), or any other gymnasium env
(CartPole-v1, Acrobot-v1, MountainCar-v0, the classification MDPs of ``envs.classification``,
...) as it is.

Atari: ``ALE/<Game>-v5`` built with ``frameskip=1`` (v5 otherwise skips 4 frames itself,
so MaxAndSkip would give 16 per step), then gymnasium's ``AtariPreprocessing`` (no-op
reset, max-and-skip 4, 84x84 grayscale), Tianshou's episodic-life, fire-reset and
reward-clipping wrappers (life loss and clipping for training envs only) and a 4-frame
stack. Tianshou's ``WarpFrame``/``FrameStack`` are not used: they crash on numpy >= 2.3.
Sticky actions are an explicit option; unset, Atari has none (ALE's v5 default is 0.25;
Tianshou's Atari examples use none) and MinAtar its own 0.1.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, RecordEpisodeStatistics
from tianshou.env.atari.atari_wrapper import ClipRewardEnv, EpisodicLifeEnv, FireResetEnv

from envs.minatar import is_minatar, make_minatar_env
from envs.registry import check_env_id, require_discrete_actions
from envs.state import replayable, require_capturable

FRAME_STACK = 4


def is_atari(env_id: str) -> bool:
    return "ale_py" in str(check_env_id(env_id).entry_point)


class EpisodeTap(gym.Wrapper):
    """Outermost wrapper that keeps (return, length in agent steps, length in frames) of
    every finished *game*.

    It reads the statistics of a ``RecordEpisodeStatistics`` at the bottom of the stack,
    so Atari returns are game scores: unclipped, and over all lives. That length counts
    emulator frames under Atari's frame skip (and the no-op and fire frames of resets), so
    the length in agent steps is counted here: this wrapper's steps since the game began
    (a reset after a lost life continues the game).
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.finished: list[tuple[float, int, int]] = []
        self.agent_steps = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.agent_steps += 1
        if "episode" in info:
            self.finished.append((float(info["episode"]["r"]), self.agent_steps, int(info["episode"]["l"])))
            self.agent_steps = 0
            info = {k: v for k, v in info.items() if k != "episode"}  # keep Tianshou's buffer info uniform
        return obs, reward, terminated, truncated, info


def make_env(env_id: str, *, training: bool, sticky_actions: float | None = None) -> Callable[[], gym.Env]:
    """A thunk building one env; ``training`` adds episodic life and reward clipping (Atari)."""

    def thunk() -> gym.Env:
        if is_minatar(env_id):
            return EpisodeTap(make_minatar_env(env_id, sticky_actions))
        if not is_atari(env_id):
            return EpisodeTap(RecordEpisodeStatistics(replayable(gym.make(env_id))))
        env = gym.make(env_id, frameskip=1, repeat_action_probability=sticky_actions or 0.0)
        env = RecordEpisodeStatistics(env)
        env = AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True)
        if training:
            env = EpisodicLifeEnv(env)
        if "FIRE" in env.unwrapped.get_action_meanings():
            env = FireResetEnv(env)
        if training:
            env = ClipRewardEnv(env)
        return EpisodeTap(FrameStackObservation(env, FRAME_STACK))

    return thunk


def check_discrete_env(env_id: str) -> gym.spaces.Discrete:
    """The action space of a registered env with discrete actions, or a UsageError."""
    check_env_id(env_id)
    bare = gym.make(env_id)
    require_discrete_actions(env_id, bare.action_space)
    bare.close()
    built = make_env(env_id, training=True)()
    try:
        require_capturable(built, env_id)
    finally:
        built.close()
    return bare.action_space


def drain_finished_episodes(envs) -> list[tuple[float, int, int]]:
    """Collect and clear the finished games (return, agent steps, frames) of every env in a Tianshou DummyVectorEnv."""
    finished = []
    for worker in envs.workers:
        finished.extend(worker.env.finished)
        worker.env.finished.clear()
    return finished
