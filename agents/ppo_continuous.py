"""PPO for continuous actions (CleanRL's ppo_continuous_action.py), with weight clipping and
plasticity diagnostics: the WC paper's policy-collapse experiment (Elsayed et al. 2024, Sec. 4.3).

    python agents/ppo_continuous.py --env-id Hopper-v5 --wc-kappa 2
    clipzoo train ppo --config ppo_hopper --wc-kappa 2 --run-dir runs/hopper_wc

A run stopped (kill -9, SIGTERM, Ctrl-C) and rerun with the same command resumes from its
last checkpoint and ends bitwise as the run never interrupted: checkpoints carry the
simulators mid-episode (envs/state.py) and every random stream (runners/base/rng.py).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import torch.nn as nn

from agents.diagnostics import DiagnosticsLogger, approx_kl, clip_fraction
from agents.evaluation import Evaluator, log_evaluation
from agents.plugins.assembly import PlasticityPlugins, agent_optimizer, grown_for_plugins
from agents.plugins.clipping import output_layer_names
from agents.plugins.interventions import InjectableHead
from agents.plugins.options import PlasticityArgs, check_plasticity_args
from envs.continuous import (
    finished_episodes,
    freeze_observation_statistics,
    load_vector_env_state,
    make_eval_env,
    make_vector_env,
    normalization_state,
    vector_env_state,
)
from runners.base.config import parse_args
from runners.base.console import tensorboard_command
from runners.base.errors import RunInterrupted, UsageError, require_at_least
from runners.base.rng import GlobalStream, numpy_generator, stream_seed
from runners.base.rundir import RunDirectory, StopRequest, duration, execute_run
from runners.base.tracking import TRACKING_OPTIONS, TrackingArgs

if TYPE_CHECKING:  # TensorBoard loads where the run directory opens its writer, not for --help
    from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args(PlasticityArgs, TrackingArgs):
    """PPO (continuous actions) with optional weight clipping and the other plasticity plug-ins; CleanRL's defaults."""

    core_options: ClassVar[tuple[str, ...]] = ("env_id", "total_timesteps", "seed", "run_dir", "wc_kappa")

    env_id: str = "Hopper-v5"
    """the id of the environment (a gymnasium env with a Box action space whose state a checkpoint can hold: MuJoCo, LunarLanderContinuous, classic control)"""
    seed: int = 1
    """seed of the experiment"""
    total_timesteps: int = 1000000
    """total timesteps of the experiment"""
    run_dir: str | None = None
    """run directory (config, TensorBoard, checkpoints); rerun with the same one to resume. Default: runs/<env>__ppo__<seed>__<time>"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the networks live; auto = cpu: 64-64 MLPs on minibatches of 64 keep a GPU waiting on kernel launches (to be confirmed on a GPU by python -m benchmarks.bench_gpu --parts c)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    torch_threads: int = 1
    """CPU threads for torch (small networks run fastest on one)"""
    compile: bool = True
    """compile the PPO loss with torch.compile (about 1.7x faster updates after a one-off compile)"""

    # Algorithm
    learning_rate: float = 3e-4
    """the learning rate of the optimizer"""
    adam_eps: float = 1e-5
    """Adam epsilon (CleanRL: 1e-5)"""
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

    # Diagnostics, checkpoints
    diagnostics_every: int = 1
    """log unit health, weight norms and distance from init every N updates (0: only at the end)"""
    heatmap_every: int = 25
    """log the gradient covariance heatmap every N updates (0: only at the end)"""
    gradcov_samples: int = 128
    """rollout samples k in the gradient covariance matrix"""
    checkpoint_every: int = 10
    """save a checkpoint every N updates"""
    eval_every: int = 0
    """env steps between evaluation rounds, counted from 0 (at the first update that reaches each multiple), and one
    at the end (0: off): episodes on env instances of their own whose seeds are the same for every training seed,
    with the training envs' observation statistics frozen (agents/evaluation.py), logged as eval/*"""
    eval_episodes: int = 10
    """episodes per evaluation round"""
    eval_deterministic: bool = True
    """evaluate the mean action; off: actions sampled from the policy, on the evaluation's own stream"""


# Options that may change when a run is resumed: they do not change what is learned.
RESUMABLE_CHANGES = {
    "run_dir",
    "device",
    "torch_threads",
    "compile",
    "diagnostics_every",
    "heatmap_every",
    "checkpoint_every",
    "eval_every",
    "eval_episodes",
    "eval_deterministic",
    "plasticity_probe_every",
    "sharpness_every",
    "sharpness_density",
}
RESUMABLE_CHANGES |= TRACKING_OPTIONS  # --track and its W&B options (runners/base/tracking.py)
# Checkpoints of this format resume exactly: simulators mid-episode and every random stream.
CHECKPOINT_FORMAT = 2


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def hidden_layer(inputs: int, layer_norm: bool) -> list[nn.Module]:
    """A 64-unit tanh layer, with LayerNorm before the tanh when asked (Lyle et al. 2023)."""
    return [layer_init(nn.Linear(inputs, 64)), *([nn.LayerNorm(64)] if layer_norm else []), nn.Tanh()]


class Agent(nn.Module):
    parallel_branches = ("critic", "actor_mean")  # two towers: layer depths restart in each

    def __init__(self, obs_dim: int, action_dim: int, layer_norm: bool = False) -> None:
        super().__init__()
        self.critic = nn.Sequential(
            *hidden_layer(obs_dim, layer_norm),
            *hidden_layer(64, layer_norm),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor_mean = nn.Sequential(
            *hidden_layer(obs_dim, layer_norm),
            *hidden_layer(64, layer_norm),
            layer_init(nn.Linear(64, action_dim), std=0.01),
        )
        self.actor_logstd = nn.Parameter(torch.zeros(1, action_dim))
        last = len(self.critic) - 1
        self.output_layers = (
            f"actor_mean.{last}",
            f"critic.{last}",
        )  # for skip-last-layer and the penultimate features
        # plasticity injection: each tower's last hidden layer and output layer (there is no encoder)
        self.injection_heads = dict.fromkeys(("critic", "actor_mean"), len(hidden_layer(obs_dim, layer_norm)))

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


class NumpyActor:
    """The actor, frozen for one rollout as float32 numpy arrays.

    One observation at a time, numpy runs this 64-64 MLP in ~6 us where torch modules
    take ~45 us, and the rollout is where CPU PPO spends most of its time. Values and
    log-probs of the rollout come from one batched torch pass afterwards.
    """

    def __init__(self, agent: Agent) -> None:
        actor = agent.actor_mean
        if isinstance(actor, InjectableHead):  # plasticity injection: trunk, then h_old (+ h_new - h_copy)
            layers = [actor._modules[str(i)] for i in range(actor.depth)]
            self.trunk, self.head = self.mirror(layers[: actor.start]), self.mirror(layers[actor.start :])
            self.grown = (self.mirror(actor.new), self.mirror(actor.copy)) if actor.is_injected else None
        else:
            self.trunk, self.head, self.grown = self.mirror(actor), [], None
        self.std = agent.actor_logstd.detach().exp().cpu().numpy()[0]

    @staticmethod
    def mirror(modules) -> list[tuple]:
        layers = []
        for module in modules:
            arrays = [p.detach().cpu().numpy() for p in module.parameters()]
            if isinstance(module, nn.Linear):
                layers.append(("linear", arrays[0].T.copy(), arrays[1].copy()))
            elif isinstance(module, nn.LayerNorm):
                layers.append(("layer_norm", arrays[0].copy(), arrays[1].copy(), module.eps))
            elif isinstance(module, nn.Tanh):
                layers.append(("tanh",))
            else:
                raise TypeError(f"NumpyActor mirrors Linear, LayerNorm and Tanh only, got {type(module).__name__}")
        return layers

    @staticmethod
    def run(layers: list[tuple], x: np.ndarray) -> np.ndarray:
        for kind, *arrays in layers:
            if kind == "linear":
                x = x @ arrays[0] + arrays[1]
            elif kind == "layer_norm":
                gain, bias, eps = arrays
                centred = x - x.mean(axis=-1, keepdims=True)
                x = centred / np.sqrt(centred.var(axis=-1, keepdims=True) + eps) * gain + bias
            else:
                x = np.tanh(x)
        return x

    def mean(self, obs: np.ndarray) -> np.ndarray:
        features = self.run(self.trunk, obs)
        out = self.run(self.head, features)
        if self.grown is not None:
            new, frozen = self.grown
            out = out + (self.run(new, features) - self.run(frozen, features))
        return out

    def sample(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mean = self.mean(obs)
        return (mean + self.std * rng.standard_normal(mean.shape, dtype=np.float32)).astype(np.float32)


def ppo_losses(
    agent: Agent, args: Args, obs, actions, logprobs, advantages, returns, values
) -> dict[str, torch.Tensor]:
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


MINIBATCH_STATS = ("policy_loss", "value_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac")


def ppo_minibatch_loss(agent: Agent, args: Args, obs, actions, logprobs, advantages, returns, values):
    """Mean loss of one minibatch and its MINIBATCH_STATS (one graph under --compile)."""
    if args.norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    terms = ppo_losses(agent, args, obs, actions, logprobs, advantages, returns, values)
    old_approx_kl, minibatch_kl = approx_kl(terms["logratio"])
    stats = [
        terms["pg"].mean(),
        terms["v"].mean(),
        terms["entropy"].mean(),
        old_approx_kl,
        minibatch_kl,
        clip_fraction(terms["ratio"], args.clip_coef),
    ]
    return terms["total"].mean(), torch.stack(stats).detach()


def generalized_advantages(
    rewards, values, dones, next_value, next_done, gamma: float, gae_lambda: float
) -> np.ndarray:
    """GAE over a (num_steps, num_envs) rollout, CleanRL's recursion; numpy is fast on these tiny rows."""
    advantages = np.zeros_like(rewards)
    lastgaelam = np.zeros_like(next_value)
    for t in reversed(range(rewards.shape[0])):
        if t == rewards.shape[0] - 1:
            nextnonterminal, nextvalues = 1.0 - next_done, next_value
        else:
            nextnonterminal, nextvalues = 1.0 - dones[t + 1], values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
    return advantages


def check_args(args: Args) -> None:
    if args.num_envs < 1 or args.num_steps < 1 or args.update_epochs < 1 or args.num_minibatches < 1:
        raise UsageError("--num-envs, --num-steps, --update-epochs and --num-minibatches must all be >= 1")
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches:
        raise UsageError(
            f"the batch (num_envs * num_steps = {batch_size}) must split evenly into --num-minibatches {args.num_minibatches}"
        )
    if args.total_timesteps < batch_size:
        raise UsageError(
            f"--total-timesteps {args.total_timesteps} is less than one rollout (num_envs * num_steps = {batch_size})"
        )
    if args.gradcov_samples < 2 or args.gradcov_samples > batch_size:
        raise UsageError(
            f"--gradcov-samples must be between 2 and the batch size {batch_size}, got {args.gradcov_samples}"
        )
    require_at_least(args, 0, "diagnostics_every", "heatmap_every", "eval_every")
    require_at_least(args, 1, "eval_episodes", "checkpoint_every", "torch_threads")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but CUDA is not available")
    check_plasticity_args(args, has_target_network=False, samples_available=(batch_size, "the batch size"))


def main(argv: list[str] | None = None) -> Path:
    """Parse and check the options, claim the run directory, train; returns the run directory."""
    args = parse_args(Args, argv, prog="clipzoo train ppo")
    check_args(args)
    envs = make_vector_env(args.env_id, args.num_envs, args.gamma)
    run_name = f"{args.env_id.replace('/', '_')}__ppo_continuous__{args.seed}__{int(time.time())}"
    try:
        return execute_run(
            args.run_dir or Path("runs") / run_name,
            asdict(args),
            RESUMABLE_CHANGES,
            lambda run, writer, checkpoint: train(args, envs, run, writer, checkpoint),
        )
    finally:
        envs.close()


def train(args: Args, envs, run: RunDirectory, writer: SummaryWriter, checkpoint: dict | None) -> None:
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = args.total_timesteps // batch_size

    # Seeding: every random stream has its own generator, derived from --seed and its name
    # (runners/base/rng.py), so seeds share no stream and one more consumer shifts no other.
    # Nothing here draws from numpy's or torch's global generators, which are left unseeded.
    #   network_init  the agent's initial weights (torch.nn.init draws globally: GlobalStream)
    #   envs          the seed of the first reset (sub-env i gets it + i); autoresets then draw
    #                 from each env's own np_random, which the checkpoint carries
    #   actions       the rollout's Gaussian noise
    #   minibatches   the shuffles of the update epochs
    #   interventions Shrink & Perturb's and last-layer reset's fresh draws (keyed by event count)
    #   diagnostics   samples, probes and Lanczos starts (keyed by global step: what a diagnostic
    #                 draws does not depend on which others ran, nor on a resume)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if args.device == "cuda" else "cpu")  # auto: the CPU, see Args.device

    obs_dim = int(np.prod(envs.single_observation_space.shape))
    action_dim = int(np.prod(envs.single_action_space.shape))

    def fresh_agent() -> Agent:
        return grown_for_plugins(args, Agent(obs_dim, action_dim, layer_norm=args.layer_norm)).to(device)

    with GlobalStream(args.seed, "network_init").active():
        agent = fresh_agent()
    # fused: the same Adam update in one kernel per tensor, several times faster on CPU
    optimizer = agent_optimizer(args, agent.parameters(), fused=True)
    plugins = PlasticityPlugins(
        agent,
        args,
        fresh_agent,
        seed=stream_seed(args.seed, "interventions"),
        sample_inputs=PlasticityPlugins.rollout_inputs(lambda: b_obs, args),  # ReDo: the current rollout's
        forward=lambda net, x: (net.critic(x), net.actor_mean(x)),
    ).attach(optimizer)
    if args.compile:
        # Compiled graphs are cached per function and do not guard on module hooks; a run
        # compiles its own, with the plug-ins' hooks in place (matters when runs share a process).
        torch.compiler.reset()
    minibatch_loss = torch.compile(ppo_minibatch_loss) if args.compile else ppo_minibatch_loss
    clipping = plugins.clipping  # weight clipping, attached after the other plug-ins: the clamp has the last word

    action_rng = numpy_generator(args.seed, "actions")
    minibatch_rng = numpy_generator(args.seed, "minibatches")
    diagnostics_seed = stream_seed(args.seed, "diagnostics")

    # Resume from the run directory's checkpoint, if there is one: it holds everything that
    # decides what comes next, so the resumed run is bitwise the run never interrupted.
    iteration_done, global_step = 0, 0
    diagnostics = DiagnosticsLogger(writer, agent, feature_layers=output_layer_names(agent), run_dir=run.path)
    if checkpoint:
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise UsageError(
                f"{run.path / 'checkpoint.pt'} is from an older ClipZoo PPO that did not save its simulators and random "
                f"streams, so it cannot resume exactly; move it away to start the run over, or use a new --run-dir"
            )
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if clipping is not None:
            clipping.load_state_dict(checkpoint["clipping"])
        plugins.load_state_dict(checkpoint.get("plugins"))
        diagnostics.load_state_dict(checkpoint["diagnostics"])
        # the simulators mid-episode, wrappers (normalisation, time limits, episode stats) and the loop's view of them
        load_vector_env_state(envs, checkpoint["envs"])
        next_obs, next_done = checkpoint["next_obs"].copy(), checkpoint["next_done"].copy()
        action_rng.bit_generator.state = checkpoint["rng"]["actions"]
        minibatch_rng.bit_generator.state = checkpoint["rng"]["minibatches"]
        iteration_done, global_step = checkpoint["iteration"], checkpoint["global_step"]
        last_rollout = tuple(t.to(device) for t in checkpoint["last_rollout"])
        print(f"resuming {run.path} from step {global_step}")
    else:
        writer.add_text(
            "hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
        )
        next_obs, _ = envs.reset(seed=stream_seed(args.seed, "envs"))
        next_done = np.zeros(args.num_envs, dtype=np.float32)
    run.set_status("running", global_step=global_step, total_timesteps=num_iterations * batch_size)

    # ALGO Logic: Storage setup (numpy on the env side, one transfer per rollout)
    obs_shape, action_shape = envs.single_observation_space.shape, envs.single_action_space.shape
    obs = np.zeros((args.num_steps, args.num_envs) + obs_shape, dtype=np.float32)
    actions = np.zeros((args.num_steps, args.num_envs) + action_shape, dtype=np.float32)
    rewards = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    dones = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)

    print(
        f"PPO on {args.env_id}, {num_iterations * batch_size:,} steps, weight clipping "
        f"{'kappa=' + str(args.wc_kappa) if clipping else 'off'}, other interventions: {plugins.describe()}; "
        f"TensorBoard: {tensorboard_command(run.path)}",
        flush=True,
    )
    rate_clock = (
        time.perf_counter(),
        global_step,
    )  # env steps/s over the last update (the first one includes the compile)

    def rollout_sample(rollout: tuple, k: int, step: int) -> tuple:
        """k rollout samples drawn by their own generator; advantages normalised as in the update."""
        picks = torch.randperm(rollout[0].shape[0], generator=torch.Generator().manual_seed(diagnostics_seed + step))[
            :k
        ]
        obs_k, actions_k, logprobs_k, advantages_k, returns_k, values_k = (t[picks.to(t.device)] for t in rollout)
        if args.norm_adv:
            advantages_k = (advantages_k - advantages_k.mean()) / (advantages_k.std() + 1e-8)
        return obs_k, actions_k, logprobs_k, advantages_k, returns_k, values_k

    evaluator = Evaluator(make_eval_env(args.env_id), args.eval_episodes) if args.eval_every else None

    def evaluation_due(step: int) -> bool:
        """Whether the update ending at ``step`` reached a multiple of --eval-every (no state: resumes agree)."""
        return evaluator is not None and step // args.eval_every > (step - batch_size) // args.eval_every

    def evaluate(step: int) -> None:
        """One evaluation round with the mean action (or sampled ones, on the round's own stream)."""
        policy = NumpyActor(agent)

        def act(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return (
                policy.mean(obs.astype(np.float32))
                if args.eval_deterministic
                else policy.sample(obs.astype(np.float32), rng)
            )

        returns, lengths = evaluator.run(
            act, step, before_reset=lambda env: freeze_observation_statistics(env, envs.envs[0])
        )
        log_evaluation(writer, returns, lengths, step)

    def log_diagnostics(step: int, rollout: tuple, heatmap: bool, grad_norm: float | None = None) -> None:
        """Unit health, ranks and weights on the rollout; the heatmap of the PPO loss on k rollout samples."""
        # the rollout's own actions: sampling new ones would draw from torch's global generator
        diagnostics.log_representation(lambda: agent.get_action_and_value(rollout[0], rollout[1]), step)
        diagnostics.log_weights(step, gradient_norm=grad_norm)
        if heatmap:
            batch = rollout_sample(rollout, args.gradcov_samples, step)
            diagnostics.log_gradient_covariance(lambda model, b: ppo_losses(model, args, *b)["total"], batch, step)

    def run_probes(step: int, rollout: tuple, iteration: int, final: bool = False) -> None:
        """Plasticity probe on rollout observations (predictions: value and action mean); Hessian of the PPO loss."""
        if args.plasticity_probe_every and (final or iteration % args.plasticity_probe_every == 0):
            inputs = rollout_sample(rollout, args.plasticity_probe_samples, step)[0]
            diagnostics.log_plasticity(
                fresh_agent,
                lambda net, x: torch.cat([net.critic(x), net.actor_mean(x)], 1),
                inputs,
                lambda params: agent_optimizer(args, params),
                step,
                steps=args.plasticity_probe_steps,
                targets=args.plasticity_probe_targets,
                seed=diagnostics_seed + step,
            )
        if args.sharpness_every and (final or iteration % args.sharpness_every == 0):
            batch = rollout_sample(rollout, args.sharpness_samples, step)
            diagnostics.log_sharpness(
                lambda: ppo_losses(agent, args, *batch)["total"].mean(),
                step,
                iterations=args.sharpness_iterations,
                seed=diagnostics_seed + step,
                save_density=args.sharpness_density,
            )

    with StopRequest() as stop:
        for iteration in range(iteration_done + 1, num_iterations + 1):
            # Annealing the rate if instructed to do so.
            if args.anneal_lr:
                frac = 1.0 - (iteration - 1.0) / num_iterations
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            actor = NumpyActor(agent)
            rollout_returns = []
            for step in range(0, args.num_steps):
                global_step += args.num_envs
                obs[step] = next_obs
                dones[step] = next_done

                # ALGO LOGIC: action logic
                action = actor.sample(next_obs, action_rng)
                actions[step] = action

                # TRY NOT TO MODIFY: execute the game and log data.
                next_obs, reward, terminations, truncations, infos = envs.step(action)
                next_done = np.logical_or(terminations, truncations).astype(np.float32)
                rewards[step] = reward
                for episodic_return, episodic_length in finished_episodes(infos):
                    rollout_returns.append(episodic_return)
                    writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                    writer.add_scalar("charts/episodic_length", episodic_length, global_step)

            # flatten the batch; values and log-probs of the rollout in one batched pass
            b_obs = torch.as_tensor(obs.reshape((-1,) + obs_shape), device=device)
            b_actions = torch.as_tensor(actions.reshape((-1,) + action_shape), device=device)
            with torch.no_grad():
                _, b_logprobs, _, b_values = agent.get_action_and_value(b_obs, b_actions)
                b_values = b_values.view(-1)
                next_value = agent.get_value(torch.as_tensor(next_obs, device=device)).view(-1).cpu().numpy()
            b_advantages = torch.as_tensor(
                generalized_advantages(
                    rewards,
                    b_values.cpu().numpy().reshape(rewards.shape),
                    dones,
                    next_value,
                    next_done,
                    args.gamma,
                    args.gae_lambda,
                ),
                device=device,
            ).view(-1)
            b_returns = b_advantages + b_values

            # Optimizing the policy and value network
            b_inds = np.arange(batch_size)
            minibatch_stats = []
            for epoch in range(args.update_epochs):
                minibatch_rng.shuffle(b_inds)
                # one gather per epoch; each minibatch is then a slice (a view, no copy)
                permutation = torch.as_tensor(b_inds, device=device)
                shuffled = [t[permutation] for t in (b_obs, b_actions, b_logprobs, b_advantages, b_returns, b_values)]
                for start in range(0, batch_size, minibatch_size):
                    loss, stats = minibatch_loss(agent, args, *(t[start : start + minibatch_size] for t in shuffled))
                    minibatch_stats.append(stats)

                    optimizer.zero_grad()
                    loss.backward()
                    grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm, foreach=True)
                    optimizer.step()  # weight clipping runs in the optimizer's step hook

                if args.target_kl is not None and stats[MINIBATCH_STATS.index("approx_kl")].item() > args.target_kl:
                    break
            all_stats = torch.stack(minibatch_stats).cpu()
            last = dict(zip(MINIBATCH_STATS, all_stats[-1].tolist()))

            y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

            # TRY NOT TO MODIFY: record rewards for plotting purposes
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            writer.add_scalar("losses/value_loss", last["value_loss"], global_step)
            writer.add_scalar("losses/policy_loss", last["policy_loss"], global_step)
            writer.add_scalar("losses/entropy", last["entropy"], global_step)
            writer.add_scalar("losses/old_approx_kl", last["old_approx_kl"], global_step)
            writer.add_scalar("losses/approx_kl", last["approx_kl"], global_step)
            writer.add_scalar(
                "losses/clipfrac", all_stats[:, MINIBATCH_STATS.index("clipfrac")].mean().item(), global_step
            )
            writer.add_scalar("losses/explained_variance", explained_var, global_step)
            # CleanRL logs the last minibatch's KL only; the mean over the whole update is steadier
            writer.add_scalar(
                "diagnostics/approx_kl_mean",
                all_stats[:, MINIBATCH_STATS.index("approx_kl")].mean().item(),
                global_step,
            )
            diagnostics.log_clipping(clipping, global_step)
            diagnostics.log_scalars(plugins.metrics(), global_step)
            last_rollout = (b_obs, b_actions, b_logprobs, b_advantages, b_returns, b_values)
            with plugins.paused():
                if args.diagnostics_every and iteration % args.diagnostics_every == 0:
                    heatmap = bool(args.heatmap_every) and iteration % args.heatmap_every == 0
                    log_diagnostics(global_step, last_rollout, heatmap, grad_norm.item())
                if iteration < num_iterations:  # the final update's probes run with the final diagnostics
                    run_probes(global_step, last_rollout, iteration)
            if evaluation_due(global_step):
                evaluate(global_step)
            now = time.perf_counter()
            sps = int((global_step - rate_clock[1]) / max(now - rate_clock[0], 1e-9))
            rate_clock = (now, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            mean_return = f"{np.mean(rollout_returns):8.1f}" if rollout_returns else "       -"
            eta = (num_iterations * batch_size - global_step) / max(sps, 1)
            print(
                f"step {global_step:>9,}/{num_iterations * batch_size:,}  episodic return {mean_return}  "
                f"approx_kl {last['approx_kl']:.4f}  SPS {sps}  ETA {duration(eta)}",
                flush=True,
            )
            if iteration == iteration_done + 2:  # the first rate this attempt measured after compiling the loss
                print(
                    f"at {sps:,} steps/s the whole budget of {num_iterations * batch_size:,} steps takes "
                    f"~{duration(num_iterations * batch_size / max(sps, 1))}",
                    flush=True,
                )
            run.report_progress(global_step, sps, eta)

            # A signal that arrived during the iteration is honoured here, at its end: the
            # checkpoint is then of a whole iteration, like any other.
            if iteration % args.checkpoint_every == 0 or iteration == num_iterations or stop.requested:
                writer.flush()  # every event up to this step is on disk before the checkpoint says so
                run.save_checkpoint(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "agent": agent.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "clipping": clipping.state_dict() if clipping else None,
                        "plugins": plugins.state_dict(),
                        "diagnostics": diagnostics.state_dict(),
                        "envs": vector_env_state(envs),
                        "next_obs": next_obs.copy(),
                        "next_done": next_done.copy(),
                        # the stateful streams; network_init is spent, interventions and diagnostics are keyed
                        "rng": {
                            "actions": action_rng.bit_generator.state,
                            "minibatches": minibatch_rng.bit_generator.state,
                        },
                        "iteration": iteration,
                        "global_step": global_step,
                        "last_rollout": last_rollout,
                    }
                )
                run.set_status("running", global_step=global_step, total_timesteps=num_iterations * batch_size)
            if stop.requested:
                run.set_status(
                    "interrupted",
                    global_step=global_step,
                    total_timesteps=num_iterations * batch_size,
                    signal=stop.signal_name,
                )
                raise RunInterrupted(stop.signal_name, run.path)

    # Every run ends with the full diagnostics, heatmap included, even a short one.
    with plugins.paused():
        log_diagnostics(global_step, last_rollout, heatmap=True)
        run_probes(global_step, last_rollout, num_iterations, final=True)
    if evaluator is not None:
        if not evaluation_due(global_step):  # every run ends with an evaluation
            evaluate(global_step)
        evaluator.close()
    run.save_model(
        {
            "agent": agent.state_dict(),
            "normalization": normalization_state(envs),
            "args": asdict(args),
            "clipping_bounds": clipping.bounds() if clipping else None,
        }
    )
    run.set_status("complete", global_step=global_step, total_timesteps=num_iterations * batch_size)
    print(f"done: {run.path} ({tensorboard_command(run.path)})")


if __name__ == "__main__":
    from runners.base.console import run_and_report

    run_and_report(main)
