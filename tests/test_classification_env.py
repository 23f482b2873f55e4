"""envs/classification.py: Lyle et al. 2023's classification MDPs (Sec. 3.2) on scikit-learn's
digits. Rewards and transitions of each variant by hand, episodes, seeding, exact capture and
restore, and a tiny DQN run on the true-label MDP."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from sklearn.datasets import load_digits
from test_env_state import check_exact_continuation
from test_qlearning import scalars

from agents import dqn
from envs.classification import ENV_IDS, EPISODE_STEPS, ClassificationMDP, random_labels
from envs.discrete import check_discrete_env, make_env
from envs.registry import registered_env_ids
from envs.state import capture_env_state, restore_env_state

TRUE, RANDOM, SPARSE = ENV_IDS
DIGITS = load_digits()
PIXELS = (DIGITS.data / 16.0).astype(np.float32)


def base(env_id: str, **kwargs) -> ClassificationMDP:
    registered_env_ids()
    return gym.make(env_id, **kwargs).unwrapped


def shown(obs: np.ndarray) -> np.ndarray:
    """The indices of the dataset images equal to ``obs``."""
    return np.flatnonzero((PIXELS == obs).all(axis=1))


def rewards_of_every_action(env: ClassificationMDP) -> list[float]:
    """The reward of each action from the env's current state (restored before each)."""
    saved, rewards = capture_env_state(env), []
    for action in range(10):
        restore_env_state(env, saved)
        rewards.append(env.step(action)[1])
    restore_env_state(env, saved)
    return rewards


def test_the_ids_are_registered_and_observations_are_digits_in_0_1():
    assert set(ENV_IDS) <= set(registered_env_ids())
    for env_id in ENV_IDS:
        assert check_discrete_env(env_id).n == 10
        env = make_env(env_id, training=True)()
        obs, _ = env.reset(seed=0)
        assert obs.shape == (64,) and obs.dtype == np.float32 and env.observation_space.contains(obs)
        assert len(shown(obs)) >= 1 and obs.max() == 1.0 and obs.min() == 0.0


def test_true_label_pays_1_exactly_for_the_images_class_and_moves_at_random():
    env = base(TRUE)
    obs, _ = env.reset(seed=3)
    seen_states = set()
    for _ in range(12):  # a few states by hand: the image shown is of the state's class, the reward 1[a = s]
        classes = set(DIGITS.target[shown(obs)])
        assert classes == {env._state}
        assert rewards_of_every_action(env) == [float(a == env._state) for a in range(10)]
        seen_states.add(env._state)
        obs, reward, terminated, truncated, _ = env.step(0)
        assert not terminated and not truncated
    # the next state does not depend on the action: the same draw after every action
    saved, following = capture_env_state(env), set()
    for action in range(10):
        restore_env_state(env, saved)
        env.step(action)
        following.add(env.mdp_state()["state"])
    assert len(following) == 1
    # uniform over the ten states
    following = []
    for _ in range(5000):
        env.step(env._state)
        following.append(env._state)
    counts = np.bincount(following, minlength=10)
    assert counts.min() > 400 and counts.max() < 600


def test_random_label_gives_each_image_a_fixed_random_label_and_pays_for_it():
    env = base(RANDOM)
    labels = random_labels(0, len(DIGITS.target))
    np.testing.assert_array_equal(env._labels, labels)
    assert 0.05 < np.mean(labels == DIGITS.target) < 0.15  # unrelated to the digit shown (chance: 0.1)
    assert np.bincount(labels, minlength=10).min() > 100  # every state has images to show
    # fixed for the whole run: every env and every reset seed sees the same labels; label_seed changes them
    other = base(RANDOM)
    other.reset(seed=12345)
    np.testing.assert_array_equal(other._labels, labels)
    assert np.mean(base(RANDOM, label_seed=1)._labels == labels) < 0.2
    np.testing.assert_array_equal(base(RANDOM, label_seed=1)._labels, random_labels(1, len(labels)))
    obs, _ = env.reset(seed=5)
    for _ in range(12):  # the image shown has the state's random label; reward 1[a = s]
        index = env._index
        assert labels[index] == env._state and index in shown(obs)
        assert rewards_of_every_action(env) == [float(a == env._state) for a in range(10)]
        obs = env.step(int(DIGITS.target[index]))[0]  # the image's true digit earns nothing unless it is its label too


def test_sparse_reward_pays_only_at_9_and_climbs_on_correct_labels():
    env = base(SPARSE)
    env.reset(seed=0)
    for state in range(10):  # 1[a = s = 9]; a = s goes to s + 1 (9 + 1 wraps to 0)
        env._enter(state)
        assert DIGITS.target[env._index] == state  # true-label's observation mapping
        assert rewards_of_every_action(env) == [float(a == state == 9) for a in range(10)]
        saved = capture_env_state(env)
        _, reward, terminated, truncated, _ = env.step(state)
        assert env._state == (state + 1) % 10 and reward == float(state == 9) and not terminated and not truncated
        restore_env_state(env, saved)
    following = []
    for _ in range(3000):  # a wrong label: a uniformly random state
        env._enter(4)
        env.step(5)
        following.append(env._state)
    counts = np.bincount(following, minlength=10)
    assert counts.min() > 220 and counts.max() < 380
    # a perfect labeller earns 1 every 10 steps
    env = make_env(SPARSE, training=True)()
    env.reset(seed=1)
    rewards = [env.step(env.unwrapped._state)[1] for _ in range(EPISODE_STEPS)]
    assert sum(rewards) in (9.0, 10.0)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_episodes_are_truncated_after_100_steps_and_never_terminate(env_id):
    env = make_env(env_id, training=True)()
    env.reset(seed=0)
    ends = []
    for t in range(1, 3 * EPISODE_STEPS + 1):
        _, _, terminated, truncated, _ = env.step(t % 10)
        assert not terminated
        if truncated:
            ends.append(t)
            env.reset()
    assert ends == [EPISODE_STEPS, 2 * EPISODE_STEPS, 3 * EPISODE_STEPS]
    assert [length for _, length, _ in env.finished] == [EPISODE_STEPS] * 3


def trajectory(env_id: str, seed: int) -> list[bytes]:
    env = make_env(env_id, training=True)()
    out = [env.reset(seed=seed)[0].tobytes()]
    for t in range(250):
        obs, reward, _, truncated, _ = env.step(t % 10)
        out.append(obs.tobytes() + bytes([int(reward)]))
        if truncated:
            out.append(env.reset()[0].tobytes())
    return out


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_a_seed_reproduces_and_two_seeds_differ(env_id):
    assert trajectory(env_id, 7) == trajectory(env_id, 7)
    assert trajectory(env_id, 7) != trajectory(env_id, 8)


@pytest.mark.parametrize(("env_id", "reset_fresh"), [(TRUE, True), (RANDOM, False), (SPARSE, True)])
def test_capture_and_restore_continue_bitwise(env_id, reset_fresh):
    check_exact_continuation(
        make_env(env_id, training=True), warmup=37, steps=400, reset_fresh=reset_fresh, ends_needed=("truncated",)
    )
    state = capture_env_state(make_env(env_id, training=True)())
    assert state["family"] == "classification" and set(state["base"]) == {"mdp", "np_random", "np_random_seed"}


def test_dqn_trains_on_the_true_label_mdp(tmp_path):
    run = tmp_path / "run"
    dqn.main(
        [
            "--env-id",
            TRUE,
            "--total-timesteps",
            "300",
            "--num-envs",
            "1",
            "--learning-starts",
            "100",
            "--batch-size",
            "32",
            "--buffer-size",
            "1000",
            "--target-update-period",
            "50",
            "--n-step",
            "1",
            "--log-every",
            "100",
            "--diagnostics-every",
            "100",
            "--heatmap-every",
            "1000",
            "--gradcov-samples",
            "32",
            "--probe-samples",
            "32",
            "--plasticity-probe-every",
            "100",
            "--plasticity-probe-steps",
            "5",
            "--plasticity-probe-targets",
            "2",
            "--plasticity-probe-samples",
            "32",
            "--wc-kappa",
            "2",
            "--wc-skip-last-layer",
            "--device",
            "cpu",
            "--run-dir",
            str(run),
        ]
    )
    assert json.loads((run / "status.json").read_text())["state"] == "complete"
    logged = scalars(run)
    returns = [value for _, value in logged["charts/episodic_return"]]
    assert returns and all(0 <= value <= EPISODE_STEPS for value in returns)
    assert "plasticity/plasticity" in logged
