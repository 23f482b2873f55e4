"""What an evaluation round costs: evaluation env steps per second (the agent's network acting
greedily on ``--eval-episodes`` envs in lockstep, agents/evaluation.py), side by side with the
training rate of the same agent and env measured in the same process.

    python benchmarks/bench_evaluation.py

The share of a run is (episodes x episode length / evaluation rate) / (interval / training rate):
the table gives it for 10 episodes of the longest episode each env allows or reaches at these
budgets, every 10k env steps, as an upper bound.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import dqn  # noqa: E402
from agents.evaluation import Evaluator  # noqa: E402
from agents.qlearning.networks import QNetwork  # noqa: E402
from envs.discrete import make_env  # noqa: E402

CASES = {  # env id: (training options, the longest episode to budget for)
    "MinAtar/Breakout-v1": (["--replay-ratio", "8", "--num-envs", "1"], 1_000),
    "CartPole-v1": (["--replay-ratio", "1", "--num-envs", "1"], 500),
}


def evaluation_rate(env_id: str, steps: int = 3_000) -> float:
    env = make_env(env_id, training=False)()
    network = QNetwork(env.observation_space.shape, int(env.action_space.n)).eval()
    evaluator = Evaluator(make_env(env_id, training=False), episodes=10)
    done, start, step = 0, time.perf_counter(), 0
    while done < steps:

        def act(obs, rng):
            with torch.no_grad():
                return network(obs)[0].argmax(1).numpy()

        done += int(evaluator.run(act, step)[1].sum())
        step += 1
    return done / (time.perf_counter() - start)


def training_rate(env_id: str, options: list[str]) -> float:
    with tempfile.TemporaryDirectory() as directory:
        dqn.main(
            [
                "--env-id",
                env_id,
                *options,
                "--total-timesteps",
                "6000",
                "--learning-starts",
                "1000",
                "--log-every",
                "1000",
                "--diagnostics-every",
                "0",
                "--heatmap-every",
                "0",
                "--run-dir",
                directory,
            ]
        )
        events = EventAccumulator(directory, size_guidance={"scalars": 0}).Reload()
        return float(np.median([e.value for e in events.Scalars("charts/SPS")][1:]))


def main() -> None:
    rows = []
    for env_id, (options, longest) in CASES.items():
        training, evaluation = training_rate(env_id, options), evaluation_rate(env_id)
        share = (10 * longest / evaluation) / (10_000 / training)
        rows.append(f"| {env_id} | {' '.join(options)} | {training:,.0f} | {evaluation:,.0f} | {100 * share:.2f}% |")
    print("| env | training | training env steps/s | evaluation env steps/s | 10 episodes every 10k steps, at most |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
