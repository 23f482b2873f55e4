"""envs/state.py: an env restored from a captured state continues bitwise as the original,
across episode ends and resets, for every env family the agents train on."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest

from envs import continuous, discrete
from envs.state import capture_env_state, restore_env_state


def canonical(value, key: str | None = None):
    """A comparable form of a step's output in which equal means bitwise equal (floats as
    hex, arrays as dtype, shape and bytes); the wall-clock episode time is left out."""
    if isinstance(value, dict):
        return tuple(sorted((k, canonical(v, k)) for k, v in value.items() if not (key == "episode" and k == "t")))
    if isinstance(value, (list, tuple)):
        return tuple(canonical(v) for v in value)
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (float, np.floating)):
        return (type(value).__name__, float(value).hex())
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return (type(value).__name__, int(value))
    return value


def episode_statistics(env: gym.Env):
    """Every finished-episode record the wrapper stack keeps (returns, lengths, EpisodeTap's games)."""
    records, layer = [], env
    while isinstance(layer, gym.Wrapper):
        if isinstance(layer, gym.wrappers.RecordEpisodeStatistics):
            records.append(
                (
                    layer.episode_count,
                    list(layer.return_queue),
                    list(layer.length_queue),
                    layer.episode_returns,
                    layer.episode_lengths,
                )
            )
        if isinstance(layer, discrete.EpisodeTap):
            records.append((list(layer.finished), layer.agent_steps))
        layer = layer.env
    return canonical(records)


def play(env: gym.Env, actions) -> tuple[list, set]:
    """Step ``env`` through ``actions``, resetting after each episode end; every output, and
    how episodes ended ("terminated", "truncated")."""
    trajectory, ends = [], set()
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        trajectory.append(canonical((obs, reward, terminated, truncated, info)))
        if terminated or truncated:
            ends.add("terminated" if terminated else "truncated")
            trajectory.append(canonical(env.reset()))
    trajectory.append(episode_statistics(env))
    return trajectory, ends


def first_difference(a: list, b: list) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def check_exact_continuation(make, warmup: int, steps: int, reset_fresh: bool, ends_needed=()) -> None:
    """Play ``warmup`` steps, capture, play ``steps`` more; restore into fresh envs and play the
    same actions: all must match bitwise, and a fresh env that is not restored must not."""
    original = make()
    original.reset(seed=11)
    original.action_space.seed(12)
    warmup_actions = [original.action_space.sample() for _ in range(warmup)]
    play(original, warmup_actions)
    # through pickle, as in a checkpoint: nothing in the state may alias the live env
    state = pickle.loads(pickle.dumps(capture_env_state(original)))
    actions = [original.action_space.sample() for _ in range(steps)]
    reference, ends = play(original, actions)
    assert ends and ends >= set(ends_needed), (
        f"the test must cross episode ends (of each kind in {ends_needed}), saw {ends}"
    )

    for attempt in range(2):  # a second restore from the same dict: restoring leaves it unchanged
        restored = make()
        if reset_fresh:
            restored.reset(seed=99)
        restore_env_state(restored, state)
        trajectory, _ = play(restored, actions)
        assert first_difference(reference, trajectory) is None, (
            f"attempt {attempt}: differs at output {first_difference(reference, trajectory)}"
        )

    # the control: without the restore, the same actions give something else
    unrestored = make()
    unrestored.reset(seed=11)
    assert first_difference(reference, play(unrestored, actions)[0]) is not None


def short_episodes(make, max_episode_steps: int):
    """``make`` with the TimeLimit of gym.make cut short, so truncations happen too."""

    def thunk():
        env = make()
        layer = env
        while not isinstance(layer, gym.wrappers.TimeLimit):
            layer = layer.env
        layer._max_episode_steps = max_episode_steps
        return env

    return thunk


@pytest.mark.parametrize("reset_fresh", [True, False])
def test_hopper_with_the_ppo_wrapper_stack_continues_exactly(reset_fresh):
    # a limit of 25 steps: episodes end both ways, and TimeLimit's count decides some of them
    check_exact_continuation(
        short_episodes(continuous.make_env("Hopper-v5", 0.99), 25),
        warmup=37,
        steps=1500,
        reset_fresh=reset_fresh,
        ends_needed=("terminated", "truncated"),
    )


@pytest.mark.parametrize("env_id", ["Ant-v5", "Humanoid-v5"])
def test_mujoco_envs_that_read_derived_positions_before_stepping_continue_exactly(env_id):
    # these read xpos/xipos, computed during the previous step, before stepping: the
    # integration state alone would change their first reward after a restore
    check_exact_continuation(
        short_episodes(continuous.make_env(env_id, 0.99), 40), warmup=23, steps=120, reset_fresh=True
    )


@pytest.mark.parametrize("reset_fresh", [True, False])
def test_cartpole_continues_exactly(reset_fresh):
    check_exact_continuation(
        discrete.make_env("CartPole-v1", training=True), warmup=9, steps=2000, reset_fresh=reset_fresh
    )


@pytest.mark.parametrize(("env_id", "reset_fresh"), [("MinAtar/Breakout-v1", True), ("MinAtar/Seaquest-v1", False)])
def test_minatar_continues_exactly(env_id, reset_fresh):
    check_exact_continuation(discrete.make_env(env_id, training=True), warmup=41, steps=3000, reset_fresh=reset_fresh)


def test_atari_with_the_dqn_wrapper_stack_continues_exactly():
    # life loss ends training episodes (EpisodicLifeEnv), sticky actions exercise the ALE's own RNG
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_exact_continuation(
            discrete.make_env("ALE/Breakout-v5", training=True, sticky_actions=0.25),
            warmup=30,
            steps=400,
            reset_fresh=False,
        )


def test_a_state_does_not_fit_another_env_or_family():
    hopper = continuous.make_env("Hopper-v5", 0.99)()
    hopper.reset(seed=0)
    state = capture_env_state(hopper)
    walker = continuous.make_env("Walker2d-v5", 0.99)()
    with pytest.raises(ValueError, match="env state of Hopper-v5 .* does not fit Walker2d-v5"):
        restore_env_state(walker, state)
    with pytest.raises(ValueError, match="does not fit"):
        restore_env_state(gym.make("Hopper-v5"), state)  # same id, another wrapper stack
    with pytest.raises(TypeError, match="cannot capture the state of FrozenLakeEnv"):
        capture_env_state(gym.make("FrozenLake-v1"))


@pytest.mark.parametrize("reset_fresh", [True, False])
def test_lunar_lander_is_replayed_to_where_it_was(reset_fresh):
    # Box2D: the world cannot be copied, so its episode is replayed; lander crashes end episodes
    # (terminated), a limit of 80 steps truncates the ones that last longer. The capture falls in
    # the second episode, begun by a reset without a seed (the first drew from reset(seed=11))
    check_exact_continuation(
        short_episodes(discrete.make_env("LunarLander-v3", training=True), 80),
        warmup=97,
        steps=1200,
        reset_fresh=reset_fresh,
        ends_needed=("terminated", "truncated"),
    )


def test_envs_whose_state_cannot_be_captured_are_refused_by_name():
    with pytest.raises(TypeError, match="without an EpisodeReplay in its wrapper stack"):
        capture_env_state(gym.make("LunarLander-v3"))  # not built by the factories
    # BipedalWalker keeps one Box2D world across episodes: replaying the last one would drift
    walker = continuous.make_env("BipedalWalker-v3", 0.99)()
    walker.reset(seed=0)
    with pytest.raises(TypeError, match=r"cannot capture the state of BipedalWalker \(gymnasium.envs.box2d"):
        capture_env_state(walker)
