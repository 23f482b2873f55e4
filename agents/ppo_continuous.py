"""PPO for continuous actions (CleanRL's ppo_continuous_action.py), with weight clipping and
plasticity diagnostics: the WC paper's policy-collapse experiment (Elsayed et al. 2024, Sec. 4.3).

    python agents/ppo_continuous.py --env-id Hopper-v5 --wc-kappa 2
    clipzoo train ppo --config hopper --wc-kappa 2 --run-dir runs/hopper_wc
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.tensorboard import SummaryWriter

from agents.clipping import WeightClipping
from agents.diagnostics import DiagnosticsLogger, approx_kl, clip_fraction
from envs.continuous import finished_episodes, load_normalization_state, make_vector_env, normalization_state
from runners.config import parse_args
from runners.errors import UsageError
from runners.rundir import RunDirectory, StopRequest, restore_rng_state, rng_state


@dataclass
class Args:
    """PPO (continuous actions) with optional weight clipping; CleanRL's defaults."""

    env_id: str = "Hopper-v5"
    """the id of the environment (any gymnasium env with a Box action space)"""
    seed: int = 1
    """seed of the experiment"""
    total_timesteps: int = 1000000
    """total timesteps of the experiment"""
    run_dir: str | None = None
    """run directory (config, TensorBoard, checkpoints); rerun with the same one to resume. Default: runs/<env>__ppo__<seed>__<time>"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the networks live; auto picks CUDA when present"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    torch_threads: int = 1
    """CPU threads for torch (small networks run fastest on one)"""

    # Algorithm
    learning_rate: float = 3e-4
    """the learning rate of the optimizer"""
    optimizer: Literal["adam", "sgd"] = "adam"
    """the optimizer (Adam with eps 1e-5 as in CleanRL, or plain SGD)"""
    num_envs: int = 1
    """the number of parallel game environments"""
    num_steps: int = 2048
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 32
    """the number of mini-batches"""
    update_epochs: int = 10
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """toggles advantages normalization"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """toggles whether or not to use a clipped loss for the value function, as per the paper"""
    ent_coef: float = 0.0
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: float | None = None
    """the target KL divergence threshold"""

    # Weight clipping (Elsayed et al. 2024)
    wc_kappa: float | None = None
    """weight clipping bound multiplier kappa (off when unset; paper: 2)"""
    wc_bound_mode: Literal["paper", "init"] = "paper"
    """paper: s_l = 1/sqrt(fan_in); init: s_l = largest |w| of each tensor at the start"""
    wc_skip_last_layer: bool = False
    """leave the actor and critic output layers unclipped"""

    # Diagnostics, checkpoints
    diagnostics_every: int = 1
    """log unit health, weight norms and distance from init every N updates (0: only at the end)"""
    heatmap_every: int = 25
    """log the gradient covariance heatmap every N updates (0: only at the end)"""
    gradcov_samples: int = 128
    """rollout samples k in the gradient covariance matrix"""
    checkpoint_every: int = 10
    """save a checkpoint every N updates"""


# Options that may change when a run is resumed: they do not change what is learned.
RESUMABLE_CHANGES = {"run_dir", "device", "torch_threads", "diagnostics_every", "heatmap_every", "checkpoint_every"}


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class Agent(nn.Module):
    output_layers = ("actor_mean.4", "critic.4")  # for skip-last-layer and the penultimate-feature ranks

    def __init__(self, obs_dim: int, action_dim: int) -> None:
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor_mean = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, action_dim), std=0.01),
        )
        self.actor_logstd = nn.Parameter(torch.zeros(1, action_dim))

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None):
        # A diagonal Gaussian written out: the same numbers as torch.distributions.Normal
        # without building a distribution object on every rollout step.
        action_mean = self.actor_mean(x)
        action_logstd = self.actor_logstd.expand_as(action_mean)
        action_std = torch.exp(action_logstd)
        if action is None:
            action = action_mean + action_std * torch.randn_like(action_mean)
        log_prob = -0.5 * ((action - action_mean) / action_std).square() - action_logstd - LOG_SQRT_2PI
        entropy = (0.5 + LOG_SQRT_2PI + action_logstd).sum(1)
        return action, log_prob.sum(1), entropy, self.critic(x)


def ppo_losses(agent: Agent, args: Args, obs, actions, logprobs, advantages, returns, values) -> dict[str, torch.Tensor]:
    """Per-sample PPO loss terms; the update takes their means, the gradient covariance uses them as they are."""
    _, newlogprob, entropy, newvalue = agent.get_action_and_value(obs, actions)
    logratio = newlogprob - logprobs
    ratio = logratio.exp()
    pg_loss = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef))
    newvalue = newvalue.view(-1)
    if args.clip_vloss:
        v_clipped = values + torch.clamp(newvalue - values, -args.clip_coef, args.clip_coef)
        v_loss = 0.5 * torch.max((newvalue - returns) ** 2, (v_clipped - returns) ** 2)
    else:
        v_loss = 0.5 * (newvalue - returns) ** 2
    total = pg_loss - args.ent_coef * entropy + v_loss * args.vf_coef
    return {"total": total, "pg": pg_loss, "v": v_loss, "entropy": entropy, "logratio": logratio, "ratio": ratio}


def check_args(args: Args) -> None:
    if args.num_envs < 1 or args.num_steps < 1 or args.update_epochs < 1 or args.num_minibatches < 1:
        raise UsageError("--num-envs, --num-steps, --update-epochs and --num-minibatches must all be >= 1")
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches:
        raise UsageError(f"the batch (num_envs * num_steps = {batch_size}) must split evenly into --num-minibatches {args.num_minibatches}")
    if args.total_timesteps < batch_size:
        raise UsageError(f"--total-timesteps {args.total_timesteps} is less than one rollout (num_envs * num_steps = {batch_size})")
    if args.wc_kappa is not None and not (math.isfinite(args.wc_kappa) and args.wc_kappa > 0):
        raise UsageError(f"--wc-kappa must be a finite number > 0, got {args.wc_kappa}")
    if args.gradcov_samples < 2 or args.gradcov_samples > batch_size:
        raise UsageError(f"--gradcov-samples must be between 2 and the batch size {batch_size}, got {args.gradcov_samples}")
    for name in ("diagnostics_every", "heatmap_every"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0")
    if args.checkpoint_every < 1:
        raise UsageError("--checkpoint-every must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but CUDA is not available")


def main(argv: list[str] | None = None) -> Path:
    """Parse and check the options, claim the run directory, train; returns the run directory."""
    args = parse_args(Args, argv, prog="clipzoo train ppo")
    check_args(args)
    envs = make_vector_env(args.env_id, args.num_envs, args.gamma)
    run_name = f"{args.env_id.replace('/', '_')}__ppo_continuous__{args.seed}__{int(time.time())}"
    run = RunDirectory(args.run_dir or Path("runs") / run_name)
    resuming = run.bind_config(asdict(args), free_keys=RESUMABLE_CHANGES)
    if resuming and (run.status() or {}).get("state") == "complete":
        print(f"{run.path} is already complete; nothing to do")
        return run.path
    checkpoint = run.load_checkpoint()
    try:
        # purge_step drops events logged after the checkpoint by the interrupted attempt.
        with SummaryWriter(str(run.path), purge_step=checkpoint["global_step"] if checkpoint else None) as writer:
            train(args, envs, run, writer, checkpoint)
    except BaseException as error:
        run.set_status("failed", error=f"{type(error).__name__}: {error}")
        raise
    finally:
        envs.close()
    return run.path


def train(args: Args, envs, run: RunDirectory, writer: SummaryWriter, checkpoint: dict | None) -> None:
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = args.total_timesteps // batch_size

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")

    obs_dim = int(np.prod(envs.single_observation_space.shape))
    action_dim = int(np.prod(envs.single_action_space.shape))
    agent = Agent(obs_dim, action_dim).to(device)
    if args.optimizer == "adam":
        optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, foreach=True)
    else:
        optimizer = optim.SGD(agent.parameters(), lr=args.learning_rate, foreach=True)
    clipping = None
    if args.wc_kappa is not None:
        clipping = WeightClipping(agent, args.wc_kappa, bound_mode=args.wc_bound_mode, skip_last_layer=args.wc_skip_last_layer).attach(optimizer)

    # Resume from the run directory's checkpoint, if there is one
    iteration_done, global_step = 0, 0
    diagnostics = DiagnosticsLogger(writer, agent, run_dir=run.path)
    if checkpoint:
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if clipping is not None:
            clipping.load_state_dict(checkpoint["clipping"])
        diagnostics.load_state_dict(checkpoint["diagnostics"])
        load_normalization_state(envs, checkpoint["normalization"])
        restore_rng_state(checkpoint["rng"])
        iteration_done, global_step = checkpoint["iteration"], checkpoint["global_step"]
        last_rollout = tuple(t.to(device) for t in checkpoint["last_rollout"])
        print(f"resuming {run.path} from step {global_step}")
    else:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items()))
    run.set_status("running", global_step=global_step, total_timesteps=num_iterations * batch_size)

    # ALGO Logic: Storage setup
    obs = torch.zeros((args.num_steps, args.num_envs) + envs.single_observation_space.shape, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs) + envs.single_action_space.shape, device=device)
    logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards = torch.zeros((args.num_steps, args.num_envs), device=device)
    dones = torch.zeros((args.num_steps, args.num_envs), device=device)
    values = torch.zeros((args.num_steps, args.num_envs), device=device)

    # Episodes in flight restart on resume (simulator state is not checkpointed); the seed
    # still depends only on the checkpoint, so resumed runs are reproducible.
    next_obs, _ = envs.reset(seed=args.seed + global_step)
    envs.action_space.seed(args.seed + global_step)
    next_obs = torch.as_tensor(next_obs, dtype=torch.float32, device=device)
    next_done = torch.zeros(args.num_envs, device=device)
    print(f"PPO on {args.env_id}, {num_iterations * batch_size:,} steps, weight clipping "
          f"{'kappa=' + str(args.wc_kappa) if clipping else 'off'}; TensorBoard: tensorboard --logdir {run.path}")
    start_time, start_step = time.time(), global_step

    def log_diagnostics(step: int, rollout: tuple, heatmap: bool, grad_norm: float | None = None) -> None:
        """Unit health, ranks and weights on the rollout; the heatmap of the PPO loss on k rollout samples."""
        diagnostics.log_representation(lambda: agent.get_action_and_value(rollout[0]), step)
        diagnostics.log_weights(step, gradient_norm=grad_norm)
        if heatmap:
            picks = torch.randperm(rollout[0].shape[0], generator=torch.Generator().manual_seed(step))[: args.gradcov_samples]
            obs_k, actions_k, logprobs_k, advantages_k, returns_k, values_k = (t[picks.to(t.device)] for t in rollout)
            if args.norm_adv:
                advantages_k = (advantages_k - advantages_k.mean()) / (advantages_k.std() + 1e-8)
            batch = (obs_k, actions_k, logprobs_k, advantages_k, returns_k, values_k)
            diagnostics.log_gradient_covariance(lambda model, b: ppo_losses(model, args, *b)["total"], batch, step)

    with StopRequest() as stop:
        for iteration in range(iteration_done + 1, num_iterations + 1):
            # Annealing the rate if instructed to do so.
            if args.anneal_lr:
                frac = 1.0 - (iteration - 1.0) / num_iterations
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            for step in range(0, args.num_steps):
                global_step += args.num_envs
                obs[step] = next_obs
                dones[step] = next_done

                # ALGO LOGIC: action logic
                with torch.no_grad():
                    action, logprob, _, value = agent.get_action_and_value(next_obs)
                    values[step] = value.flatten()
                actions[step] = action
                logprobs[step] = logprob

                # TRY NOT TO MODIFY: execute the game and log data.
                next_obs, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
                next_done = np.logical_or(terminations, truncations)
                rewards[step] = torch.as_tensor(reward, device=device).view(-1)
                next_obs = torch.as_tensor(next_obs, dtype=torch.float32, device=device)
                next_done = torch.as_tensor(next_done, dtype=torch.float32, device=device)
                for episodic_return, episodic_length in finished_episodes(infos):
                    writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                    writer.add_scalar("charts/episodic_length", episodic_length, global_step)

            # bootstrap value if not done
            with torch.no_grad():
                next_value = agent.get_value(next_obs).reshape(1, -1)
                advantages = torch.zeros_like(rewards)
                lastgaelam = 0
                for t in reversed(range(args.num_steps)):
                    if t == args.num_steps - 1:
                        nextnonterminal = 1.0 - next_done
                        nextvalues = next_value
                    else:
                        nextnonterminal = 1.0 - dones[t + 1]
                        nextvalues = values[t + 1]
                    delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                    advantages[t] = lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
                returns = advantages + values

            # flatten the batch
            b_obs = obs.reshape((-1,) + envs.single_observation_space.shape)
            b_logprobs = logprobs.reshape(-1)
            b_actions = actions.reshape((-1,) + envs.single_action_space.shape)
            b_advantages = advantages.reshape(-1)
            b_returns = returns.reshape(-1)
            b_values = values.reshape(-1)

            # Optimizing the policy and value network
            b_inds = np.arange(batch_size)
            minibatch_kls, clipfracs = [], []
            for epoch in range(args.update_epochs):
                np.random.shuffle(b_inds)
                for start in range(0, batch_size, minibatch_size):
                    mb_inds = torch.as_tensor(b_inds[start : start + minibatch_size], device=device)
                    mb_advantages = b_advantages[mb_inds]
                    if args.norm_adv:
                        mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                    terms = ppo_losses(agent, args, b_obs[mb_inds], b_actions[mb_inds], b_logprobs[mb_inds],
                                       mb_advantages, b_returns[mb_inds], b_values[mb_inds])
                    old_approx_kl, minibatch_kl = approx_kl(terms["logratio"])
                    minibatch_kls.append(minibatch_kl)
                    clipfracs.append(clip_fraction(terms["ratio"], args.clip_coef))
                    pg_loss, v_loss, entropy_loss = terms["pg"].mean(), terms["v"].mean(), terms["entropy"].mean()

                    optimizer.zero_grad()
                    terms["total"].mean().backward()
                    grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm, foreach=True)
                    optimizer.step()  # weight clipping runs in the optimizer's step hook

                if args.target_kl is not None and minibatch_kl.item() > args.target_kl:
                    break

            y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

            # TRY NOT TO MODIFY: record rewards for plotting purposes
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
            writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
            writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
            writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
            writer.add_scalar("losses/approx_kl", minibatch_kl.item(), global_step)
            writer.add_scalar("losses/clipfrac", torch.stack(clipfracs).mean().item(), global_step)
            writer.add_scalar("losses/explained_variance", explained_var, global_step)
            writer.add_scalar("diagnostics/approx_kl_mean", torch.stack(minibatch_kls).mean().item(), global_step)
            diagnostics.log_clipping(clipping, global_step)
            last_rollout = (b_obs, b_actions, b_logprobs, b_advantages, b_returns, b_values)
            if args.diagnostics_every and iteration % args.diagnostics_every == 0:
                heatmap = bool(args.heatmap_every) and iteration % args.heatmap_every == 0
                log_diagnostics(global_step, last_rollout, heatmap, grad_norm.item())
            sps = int((global_step - start_step) / (time.time() - start_time))
            writer.add_scalar("charts/SPS", sps, global_step)
            print(f"step {global_step:>9,}/{num_iterations * batch_size:,}  SPS {sps}  "
                  f"approx_kl {minibatch_kl.item():.4f}", flush=True)

            if iteration % args.checkpoint_every == 0 or iteration == num_iterations or stop.requested:
                run.save_checkpoint({
                    "agent": agent.state_dict(), "optimizer": optimizer.state_dict(),
                    "clipping": clipping.state_dict() if clipping else None,
                    "diagnostics": diagnostics.state_dict(), "normalization": normalization_state(envs),
                    "rng": rng_state(), "iteration": iteration, "global_step": global_step,
                    "last_rollout": last_rollout,
                })
                writer.flush()
                run.set_status("running", global_step=global_step, total_timesteps=num_iterations * batch_size)
            if stop.requested:
                run.set_status("interrupted", global_step=global_step, signal=stop.signal_name)
                print(f"{stop.signal_name}: checkpointed at step {global_step}; rerun with --run-dir {run.path} to resume")
                writer.close()
                envs.close()
                return run.path

    # Every run ends with the full diagnostics, heatmap included, even a short one.
    log_diagnostics(global_step, last_rollout, heatmap=True)
    run.save_model({"agent": agent.state_dict(), "normalization": normalization_state(envs), "args": asdict(args),
                    "clipping_bounds": clipping.bounds() if clipping else None})
    run.set_status("complete", global_step=global_step, total_timesteps=num_iterations * batch_size)
    print(f"done: {run.path} (tensorboard --logdir {run.path})")


if __name__ == "__main__":
    from runners.cli import run_and_report

    run_and_report(main)
