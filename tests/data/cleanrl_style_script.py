"""A stand-in for a CleanRL script of the gymnasium 0.29 era, for tests/test_authors_ppo.py: it uses
the two 0.29 forms the weight-clipping authors' PPO script uses (TransformObservation without an
observation space; finished episodes read from infos["final_info"] as a list of per-env dicts),
on CartPole with three envs and seeded random actions, and writes what it logs to TensorBoard and
to runs/<name>/episodes.json. Under gymnasium 0.29.1 itself it recorded
tests/data/gymnasium029_episodes.json:

    PYTHONPATH=<gymnasium 0.29.1> python cleanrl_style_script.py --seed 6 --total-timesteps 1200
"""

import dataclasses
import json

import gymnasium as gym
import numpy as np
import tyro
from torch.utils.tensorboard import SummaryWriter
from weight_clipping import BOUND  # importable only if the script's own folder is on the path


@dataclasses.dataclass
class Args:
    env_id: str = "CartPole-v1"
    seed: int = 1
    total_timesteps: int = 600
    num_envs: int = 3


def make_env(env_id):
    def thunk():
        env = gym.wrappers.RecordEpisodeStatistics(gym.make(env_id))
        return gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -BOUND, BOUND))

    return thunk


if __name__ == "__main__":
    args = tyro.cli(Args)
    run_name = f"{args.env_id}__{args.seed}"
    writer = SummaryWriter(f"runs/{run_name}")
    envs = gym.vector.SyncVectorEnv([make_env(args.env_id) for _ in range(args.num_envs)])
    envs.reset(seed=args.seed)
    actions = np.random.default_rng(args.seed)
    global_step, logged = 0, []
    while global_step < args.total_timesteps:
        global_step += args.num_envs
        _, _, _, _, infos = envs.step(actions.integers(0, 2, size=args.num_envs))
        if "final_info" in infos:
            for env_index, info in enumerate(infos["final_info"]):
                if info and "episode" in info:
                    writer.add_scalar("charts/episodic_return", info["episode"]["r"], global_step)
                    writer.add_scalar("charts/episodic_length", info["episode"]["l"], global_step)
                    episode = [float(np.squeeze(info["episode"][key])) for key in ("r", "l")]
                    logged.append([global_step, env_index, *episode])
    writer.close()
    with open(f"runs/{run_name}/episodes.json", "w") as file:
        json.dump({"gymnasium": gym.__version__, "episodes": logged}, file)
