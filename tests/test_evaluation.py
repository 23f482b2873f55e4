"""Evaluation episodes: at the steps asked, the same episodes for every training seed, and
never a change to what is learned (bitwise)."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import dqn, ppo_continuous, rainbow
from agents.evaluation import Evaluator

CARTPOLE = (
    "--env-id CartPole-v1 --num-envs 2 --batch-size 16 --buffer-size 1000 --learning-starts 200 --n-step "
    "1 --target-update-period 50 --eps-decay-steps 300 --log-every 100 --diagnostics-every 300 "
    "--heatmap-every 0 --gradcov-samples 16 --probe-samples 32 --checkpoint-every 10000 --total-timesteps "
    "500"
).split()
HOPPER = (
    "--env-id Hopper-v5 --num-steps 128 --num-minibatches 4 --update-epochs 2 --total-timesteps 640 "
    "--gradcov-samples 16 --heatmap-every 0 --no-compile"
).split()


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def learning(run_dir) -> dict[str, list[tuple[int, float]]]:
    return {
        tag: values
        for tag, values in scalars(run_dir).items()
        if not tag.startswith("eval/") and tag not in ("charts/SPS", "charts/gradient_steps_per_second")
    }


def weights(run_dir, key: str) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=False)[key]


@pytest.mark.parametrize("agent", [dqn, rainbow])
def test_q_learning_evaluates_at_the_steps_asked_and_learns_bitwise_the_same(tmp_path, agent):
    extra = ["--num-atoms", "11"] if agent is rainbow else []
    agent.main([*CARTPOLE, *extra, "--run-dir", str(tmp_path / "plain")])
    agent.main(
        [*CARTPOLE, *extra, "--eval-every", "300", "--eval-episodes", "3", "--run-dir", str(tmp_path / "evaluated")]
    )
    evaluated = scalars(tmp_path / "evaluated")
    assert [step for step, _ in evaluated["eval/episodic_return"]] == [300, 500]  # from 0, and at the end
    assert all(1 <= value <= 500 for _, value in evaluated["eval/episodic_length"])  # CartPole's limit: 500
    assert learning(tmp_path / "evaluated") == learning(tmp_path / "plain")
    plain, with_eval = weights(tmp_path / "plain", "network"), weights(tmp_path / "evaluated", "network")
    assert all(torch.equal(plain[name], with_eval[name]) for name in plain)


def test_ppo_evaluates_at_the_steps_asked_and_learns_bitwise_the_same(tmp_path):
    ppo_continuous.main([*HOPPER, "--run-dir", str(tmp_path / "plain")])
    ppo_continuous.main(
        [*HOPPER, "--eval-every", "256", "--eval-episodes", "2", "--run-dir", str(tmp_path / "evaluated")]
    )
    evaluated = scalars(tmp_path / "evaluated")
    assert [step for step, _ in evaluated["eval/episodic_return"]] == [256, 512, 640]
    assert learning(tmp_path / "evaluated") == learning(tmp_path / "plain")
    plain, with_eval = weights(tmp_path / "plain", "agent"), weights(tmp_path / "evaluated", "agent")
    assert all(torch.equal(plain[name], with_eval[name]) for name in plain)


def test_every_training_seed_meets_the_same_evaluation_episodes():
    def lengths(step: int) -> list[int]:  # a fixed policy: the episodes alone decide the lengths
        evaluator = Evaluator(lambda: gym.make("CartPole-v1"), episodes=5)
        return evaluator.run(lambda obs, rng: (obs[:, 2] > 0).astype(int), step)[1].tolist()

    assert lengths(1000) == lengths(1000)  # nothing of --seed reaches it, so every run sees these
    assert lengths(1000) != lengths(2000)  # each round its own episodes


def test_the_evaluation_epsilon_is_validated(clipzoo):
    code, _, err = clipzoo("train", "dqn", *CARTPOLE, "--eval-epsilon", "1.5")
    assert code == 2 and err.strip() == "error: --eval-epsilon must be in [0, 1], got 1.5"
