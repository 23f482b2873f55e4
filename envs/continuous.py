"""Continuous-control envs (MuJoCo v5, and any Box-action env whose state ``envs/state.py`` can
capture) with CleanRL's PPO wrapper stack.

gymnasium 1.x vector envs default to NEXT_STEP autoreset, which breaks CleanRL's
bookkeeping; these are built with SAME_STEP, so a finished episode's statistics are
in ``infos["final_info"]["episode"]`` under the ``infos["final_info"]["_episode"]`` mask.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from envs.registry import check_env_id, require_continuous_actions
from envs.state import capture_env_state, replayable, require_capturable, restore_env_state

OBS_CLIP = 10.0
REWARD_CLIP = 10.0


def _mujoco_warning(message: str) -> None:
    warnings.warn(f"MuJoCo: {message.strip()}", RuntimeWarning, stacklevel=2)


def quiet_mujoco_log() -> None:
    """MuJoCo's default warning handler appends every warning (e.g. HalfCheetah-v5's deprecated
    `settotalmass`, at each model compile) to MUJOCO_LOG.TXT in the current directory; Python's
    warnings show it once on stderr instead and write nothing. Set before an env is built (not at
    import: MuJoCo takes a fifth of a second to load, which ``--help`` need not wait for)."""
    import mujoco

    mujoco.set_mju_user_warning(_mujoco_warning)


def make_env(env_id: str, gamma: float) -> Callable[[], gym.Env]:
    """A thunk building one env: flatten, episode stats, clip action, normalise obs and reward, clip both."""

    def thunk() -> gym.Env:
        quiet_mujoco_log()
        env = replayable(gym.make(env_id))  # a Box2D env's state is its episode, replayed (envs/state.py)
        env = gym.wrappers.FlattenObservation(env)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = gym.wrappers.ClipAction(env)
        env = gym.wrappers.NormalizeObservation(env)
        env = gym.wrappers.TransformObservation(
            env, lambda obs: np.clip(obs, -OBS_CLIP, OBS_CLIP), env.observation_space
        )
        env = gym.wrappers.NormalizeReward(env, gamma=gamma)
        env = gym.wrappers.TransformReward(env, lambda reward: np.clip(reward, -REWARD_CLIP, REWARD_CLIP))
        return env

    return thunk


def make_eval_env(env_id: str) -> Callable[[], gym.Env]:
    """A thunk building an evaluation env: ``make_env``'s stack without reward normalisation and
    clipping, so rewards sum to the true return; its observation statistics are the training
    env's, frozen (``freeze_observation_statistics``), as the policy saw them."""

    def thunk() -> gym.Env:
        quiet_mujoco_log()
        env = gym.wrappers.FlattenObservation(gym.make(env_id))
        env = gym.wrappers.ClipAction(env)
        env = gym.wrappers.NormalizeObservation(env)
        env.update_running_mean = False
        return gym.wrappers.TransformObservation(
            env, lambda obs: np.clip(obs, -OBS_CLIP, OBS_CLIP), env.observation_space
        )

    return thunk


def freeze_observation_statistics(eval_env: gym.Env, training_env: gym.Env) -> None:
    """Give ``eval_env`` a copy of ``training_env``'s running observation statistics, not updated by evaluation."""
    source = _find_wrapper(training_env, gym.wrappers.NormalizeObservation)
    target = _find_wrapper(eval_env, gym.wrappers.NormalizeObservation)
    target.obs_rms = copy.deepcopy(source.obs_rms)
    target.update_running_mean = False


def make_vector_env(env_id: str, num_envs: int, gamma: float) -> gym.vector.SyncVectorEnv:
    """``num_envs`` copies in one process, SAME_STEP autoreset; refuses unknown ids and discrete actions."""
    check_env_id(env_id)
    quiet_mujoco_log()
    bare = gym.make(env_id)  # the wrapper stack itself fails on discrete actions, less clearly
    require_continuous_actions(env_id, bare.action_space)
    bare.close()
    envs = gym.vector.SyncVectorEnv(
        [make_env(env_id, gamma) for _ in range(num_envs)], autoreset_mode=AutoresetMode.SAME_STEP
    )
    try:
        require_capturable(envs.envs[0], env_id)
    except Exception:  # refused: close what was built before saying so
        envs.close()
        raise
    return envs


def _find_wrapper(env: gym.Env, kind: type) -> gym.Wrapper:
    while not isinstance(env, kind):
        env = env.env
    return env


# What SyncVectorEnv keeps between steps. In SAME_STEP mode step() overwrites all of it
# before reading it (``_autoreset_envs`` matters in NEXT_STEP mode only); it is saved anyway,
# so a restored vector env is the saved one in every attribute, not just in what it returns.
_VECTOR_STATE = ("_env_obs", "_observations", "_rewards", "_terminations", "_truncations", "_autoreset_envs")


def vector_env_state(envs: gym.vector.SyncVectorEnv) -> dict:
    """Every sub-env's full state (envs/state.py) and the vector env's own, for checkpoints
    that resume episodes in flight exactly."""
    return {
        "autoreset_mode": envs.autoreset_mode.value,
        "envs": [capture_env_state(env) for env in envs.envs],
        **{name: copy.deepcopy(getattr(envs, name)) for name in _VECTOR_STATE},
    }


def load_vector_env_state(envs: gym.vector.SyncVectorEnv, state: dict) -> None:
    if len(state["envs"]) != len(envs.envs) or state["autoreset_mode"] != envs.autoreset_mode.value:
        raise ValueError(
            f"checkpoint has {len(state['envs'])} envs in {state['autoreset_mode']} autoreset mode, "
            f"this run {len(envs.envs)} in {envs.autoreset_mode.value}"
        )
    for env, env_state in zip(envs.envs, state["envs"]):
        restore_env_state(env, env_state)
    for name in _VECTOR_STATE:
        setattr(envs, name, copy.deepcopy(state[name]))


def normalization_state(envs: gym.vector.SyncVectorEnv) -> list[dict]:
    """Running observation/return statistics of every sub-env, saved with the final model
    (evaluation normalises observations as training did)."""
    states = []
    for env in envs.envs:
        obs = _find_wrapper(env, gym.wrappers.NormalizeObservation).obs_rms
        reward = _find_wrapper(env, gym.wrappers.NormalizeReward)
        states.append(
            {
                "obs_mean": obs.mean.copy(),
                "obs_var": obs.var.copy(),
                "obs_count": obs.count,
                "return_mean": reward.return_rms.mean.copy(),
                "return_var": reward.return_rms.var.copy(),
                "return_count": reward.return_rms.count,
                "discounted_reward": reward.discounted_reward.copy(),
            }
        )
    return states


def load_normalization_state(envs: gym.vector.SyncVectorEnv, states: list[dict]) -> None:
    if len(states) != len(envs.envs):
        raise ValueError(
            f"checkpoint has normalisation statistics for {len(states)} envs, this run has {len(envs.envs)}"
        )
    for env, state in zip(envs.envs, states):
        obs = _find_wrapper(env, gym.wrappers.NormalizeObservation).obs_rms
        reward = _find_wrapper(env, gym.wrappers.NormalizeReward)
        obs.mean, obs.var, obs.count = state["obs_mean"].copy(), state["obs_var"].copy(), state["obs_count"]
        reward.return_rms.mean, reward.return_rms.var = state["return_mean"].copy(), state["return_var"].copy()
        reward.return_rms.count = state["return_count"]
        reward.discounted_reward = state["discounted_reward"].copy()


def finished_episodes(infos: dict) -> list[tuple[float, int]]:
    """(return, length) of every episode that ended on this vector step (SAME_STEP autoreset)."""
    final = infos.get("final_info")
    if not final or "_episode" not in final:
        return []
    mask = final["_episode"]
    return [(float(ret), int(length)) for ret, length in zip(final["episode"]["r"][mask], final["episode"]["l"][mask])]
