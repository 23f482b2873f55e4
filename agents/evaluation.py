"""Evaluation episodes, shared by every agent: the policy without its training exploration,
on env instances of its own, at fixed env seeds.

    evaluator = Evaluator(make_eval_env, episodes=10)
    returns, lengths = evaluator.run(act, step)  # act(obs batch, rng) -> actions

Each round (the env step it is taken at) resets its ``episodes`` envs with seeds drawn from
a stream of the evaluation's own (``EVAL_SEED``), not from ``--seed``: every training seed
meets the same episodes at the same step, so seed-to-seed differences are the agents' alone,
and a round rerun after a resume replays them exactly. The round's own action generator (for
epsilon or a sampled action) is keyed the same way. Nothing here touches the training envs,
the replay buffer or a training stream, so evaluation never changes what is learned.

Returns are the envs' own rewards summed over a whole game: the evaluation envs have no
reward clipping, normalisation or life loss (Atari scores over all lives). An episode that
has not ended after ``MAX_EPISODE_STEPS`` agent steps is cut there (Atari's usual 108k
frames at frame skip 4; only envs without a limit of their own can reach it).
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from runners.base.rng import numpy_generator, stream_seed

EVAL_SEED = 0  # ours: the evaluation stream's seed, the same for every training seed
MAX_EPISODE_STEPS = 27_000


class Evaluator:
    def __init__(self, make_env: Callable[[], gym.Env], episodes: int) -> None:
        self.envs = [make_env() for _ in range(episodes)]

    def run(
        self,
        act: Callable[[np.ndarray, np.random.Generator], np.ndarray],
        step: int,
        before_reset: Callable[[gym.Env], None] = lambda env: None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(return, length in agent steps) of one episode per env, all played in lockstep;
        ``before_reset(env)`` prepares each env (e.g. frozen observation statistics)."""
        rng = numpy_generator(EVAL_SEED, f"eval/{step}/actions")
        observations = []
        for index, env in enumerate(self.envs):
            before_reset(env)
            observations.append(env.reset(seed=stream_seed(EVAL_SEED, f"eval/{step}/{index}"))[0])
        returns, lengths = np.zeros(len(self.envs)), np.zeros(len(self.envs), dtype=int)
        playing = np.ones(len(self.envs), dtype=bool)
        while playing.any():
            ids = np.flatnonzero(playing)
            actions = act(np.stack([observations[i] for i in ids]), rng)
            for index, action in zip(ids, actions):
                observations[index], reward, terminated, truncated, _ = self.envs[index].step(action)
                returns[index] += float(reward)
                lengths[index] += 1
                if terminated or truncated or lengths[index] >= MAX_EPISODE_STEPS:
                    playing[index] = False
        return returns, lengths

    def close(self) -> None:
        for env in self.envs:
            env.close()


def log_evaluation(writer, returns: np.ndarray, lengths: np.ndarray, step: int) -> None:
    """``eval/episodic_return`` and ``eval/episodic_length``: the round's means over its episodes."""
    writer.add_scalar("eval/episodic_return", float(np.mean(returns)), step)
    writer.add_scalar("eval/episodic_length", float(np.mean(lengths)), step)
    print(
        f"step {step:>9,}  evaluation: return {np.mean(returns):.1f} over {len(returns)} episodes "
        f"(min {np.min(returns):.1f}, max {np.max(returns):.1f})",
        flush=True,
    )
