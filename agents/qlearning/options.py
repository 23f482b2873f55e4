"""The options of the Tianshou agents (``QLearningArgs``, ``DQNArgs``, ``RainbowArgs``) and their
checks (``check_args``, with the exact replay ratio's ``collection_plan``), in a module that
imports neither torch nor Tianshou: ``clipzoo train dqn --help``, the registry and a sweep's
checks of every run read them without loading either. Each field's docstring is its ``--help``;
the code that uses them: ``agents/qlearning/run.py``, ``agents/dqn.py``, ``agents/rainbow.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Literal

from agents.plugins.options import PlasticityArgs, check_plasticity_args
from runners.base.errors import UsageError, require_at_least
from runners.base.tracking import TrackingArgs


@dataclass
class QLearningArgs(PlasticityArgs, TrackingArgs):
    core_options: ClassVar[tuple[str, ...]] = (
        "env_id",
        "total_timesteps",
        "seed",
        "run_dir",
        "replay_ratio",
        "wc_kappa",
    )

    env_id: str = "ALE/Pong-v5"
    """the id of the environment (Atari ALE/<Game>-v5, MinAtar/<Game>-v1, or a gymnasium env with discrete actions whose state a checkpoint can hold: classic control, LunarLander, the classification MDPs)"""
    seed: int = 1
    """seed of the experiment"""
    total_timesteps: int = 10_000_000
    """total env steps (agent steps: on Atari one step is 4 frames), the random warm-up included; run exactly"""
    run_dir: str | None = None
    """run directory (config, TensorBoard, checkpoints); rerun with the same one to resume. Default: runs/<env>__<agent>__<seed>__<time>"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the networks live; auto picks CUDA when present"""
    torch_threads: int = 1
    """CPU threads for torch"""
    lean_update: bool = True
    """Tianshou's update with its per-step Python overhead removed, and fused Adam (same numbers to rounding; agents/lean_update.py); off: the stock path"""

    replay_ratio: float = 1.0
    """gradient updates per env step (docs/metrics.md, replay ratio); must be realisable with whole gradient steps"""
    num_envs: int = 10
    """parallel training envs (one process); env steps per collect are the smallest multiple that realises the replay ratio"""
    batch_size: int = 32
    """minibatch size of each gradient step"""
    buffer_size: int = 100_000
    """replay buffer capacity in transitions"""
    learning_starts: int = 320
    """random-action env steps that fill the buffer before training (Tianshou: batch_size x num_envs)"""
    learning_rate: float = 1e-4
    """learning rate of the optimizer"""
    gamma: float = 0.99
    """discount factor"""
    n_step: int = 3
    """n-step return horizon"""
    target_update_period: int = 500
    """gradient steps between target-network updates (Tianshou's target_update_freq and Atari examples' 500), so independent
    of the replay ratio; Dopamine's target_update_period counts agent steps instead (1,000 at update period 4: 250 updates)"""
    eps_start: float = 1.0
    """epsilon-greedy exploration at the start of training"""
    eps_end: float = 0.05
    """epsilon-greedy exploration after the decay"""
    eps_decay_steps: int = 1_000_000
    """env steps over which epsilon decays linearly"""
    sticky_actions: float | None = None
    """probability of repeating the previous action; unset: Atari 0 (Tianshou's examples; ALE v5's own default is 0.25), MinAtar 0.1 (its own)"""

    log_every: int = 5000
    """env steps between writes of losses and rates (also the trainer's epoch length)"""
    diagnostics_every: int = 50_000
    """env steps between unit-health, rank and weight diagnostics (0: only at the end)"""
    heatmap_every: int = 250_000
    """env steps between gradient covariance heatmaps (0: only at the end)"""
    gradcov_samples: int = 128
    """replay samples k in the gradient covariance matrix"""
    probe_samples: int = 512
    """replay samples in the unit-health and feature-rank probe batch"""
    eval_every: int = 0
    """env steps between evaluation rounds, counted from 0, and one at the end (0: off): greedy episodes on env instances
    of their own whose seeds are the same for every training seed (agents/evaluation.py), logged as eval/*"""
    eval_episodes: int = 10
    """episodes per evaluation round"""
    eval_epsilon: float = 0.001
    """epsilon of the evaluation policy (Dopamine's 0.001; Tianshou's Atari examples test at 0.005); Rainbow evaluates
    with its noisy layers' mean weights"""
    checkpoint_every: int = 50_000
    """env steps between checkpoints, counted from 0 (a checkpoint falls at the first log step at or after each multiple)"""
    checkpoint_buffer: Literal["always", "never"] = "always"
    """save the replay buffer in checkpoints, so a resume is exact; never: smaller checkpoints, and a resume refills
    the buffer with random actions (not exact: status.json and TensorBoard say so)"""


@dataclass
class DQNArgs(QLearningArgs):
    """DQN on Tianshou with optional weight clipping; defaults follow Tianshou's Atari DQN example."""

    double_q: bool = True
    """use double Q-learning targets (online argmax, target evaluation)"""
    huber_delta: float | None = None
    """Huber loss threshold for the TD error (unset: squared error, as Tianshou's example)"""


@dataclass
class RainbowArgs(QLearningArgs):
    """Rainbow on Tianshou with optional weight clipping; defaults follow Tianshou's Atari Rainbow example,
    except exploration: noisy layers with epsilon 0, as in the Rainbow paper."""

    learning_rate: float = 0.0000625
    """learning rate of the optimizer (Rainbow paper, Adam)"""
    adam_eps: float = 1.5e-4
    """Adam epsilon (Rainbow paper)"""
    num_atoms: int = 51
    """atoms of the return distribution"""
    v_min: float = -10.0
    """smallest atom"""
    v_max: float = 10.0
    """largest atom"""
    noisy_std: float = 0.5
    """sigma_0 of the factorised noisy layers, sigma = sigma_0 / sqrt(fan_in) (Hessel et al. 2018 and Fortunato et al.:
    0.5; Tianshou's Atari example: 0.1). With epsilon 0 it alone sets how much Rainbow explores"""
    dueling: bool = True
    """separate value and advantage streams"""
    noisy: bool = True
    """noisy linear layers in the head"""
    prioritized: bool = True
    """prioritized replay"""
    alpha: float = 0.5
    """prioritization exponent"""
    beta: float = 0.4
    """initial importance-sampling exponent"""
    beta_final: float = 1.0
    """importance-sampling exponent after the anneal"""
    beta_anneal_steps: int = 5_000_000
    """env steps over which beta anneals linearly"""
    eps_start: float = 0.0
    """epsilon-greedy on top of the noisy layers at the start of training (Rainbow paper: 0, exploration by noise)"""
    eps_end: float = 0.0
    """epsilon-greedy on top of the noisy layers after the decay (Rainbow paper: 0)"""
    wc_include_noisy_sigma: bool = False
    """also clip the noisy layers' sigma parameters (bound from their layer's fan_in)"""


# ---------------------------------------------------------------- replay ratio and the checks
MAX_STEPS_PER_COLLECT = 1000
MAX_REPLAY_RATIO = 128  # beyond the highest ratios studied; a larger one is almost surely a typo


def collection_plan(replay_ratio: float, num_envs: int) -> tuple[int, int]:
    """(env steps per collect, gradient steps per collect) with ratio exactly ``replay_ratio``.

    Collects are whole rounds over the ``num_envs`` envs, so the step count is the
    smallest multiple of ``num_envs`` whose product with the ratio is whole.
    """
    if not 0 < replay_ratio <= MAX_REPLAY_RATIO:
        raise UsageError(
            f"--replay-ratio must be > 0 and at most {MAX_REPLAY_RATIO} gradient steps per env step, got {replay_ratio}"
        )
    ratio = Fraction(str(replay_ratio))
    steps = math.lcm(num_envs, ratio.denominator)
    if steps > MAX_STEPS_PER_COLLECT:
        raise UsageError(
            f"--replay-ratio {replay_ratio} cannot be realised with whole gradient steps unless each collect takes "
            f"{steps} env steps (with {num_envs} envs); use a ratio with a small denominator, e.g. 0.25, 0.5, 1, 2, 4, 8"
        )
    return int(steps), int(ratio * steps)


def check_args(args: QLearningArgs) -> tuple[int, int, int]:
    """Refuse impossible settings; returns (steps per collect, gradient steps per collect, target period)."""
    require_at_least(
        args,
        1,
        "num_envs",
        "batch_size",
        "buffer_size",
        "n_step",
        "target_update_period",
        "log_every",
        "checkpoint_every",
        "gradcov_samples",
        "probe_samples",
        "torch_threads",
    )
    require_at_least(args, 0, "diagnostics_every", "heatmap_every", "learning_starts", "eps_decay_steps", "eval_every")
    require_at_least(args, 1, "eval_episodes")
    if not 0 <= args.eval_epsilon <= 1:
        raise UsageError(f"--eval-epsilon must be in [0, 1], got {args.eval_epsilon}")
    if args.sticky_actions is not None and not (0 <= args.sticky_actions < 1):
        raise UsageError(f"--sticky-actions must be in [0, 1), got {args.sticky_actions}")
    steps_per_collect, gradient_steps = collection_plan(args.replay_ratio, args.num_envs)
    if args.learning_starts < max(args.batch_size, args.gradcov_samples):
        raise UsageError(
            f"--learning-starts {args.learning_starts} must be at least the batch size and --gradcov-samples, "
            f"so the first update has data"
        )
    if args.learning_starts > args.buffer_size:
        raise UsageError(f"--learning-starts {args.learning_starts} exceeds --buffer-size {args.buffer_size}")
    fit_log_interval(args, steps_per_collect)
    warmup = warmup_length(args)
    if (args.total_timesteps - warmup) % steps_per_collect:  # training runs in whole collects
        below = warmup + (args.total_timesteps - warmup) // steps_per_collect * steps_per_collect
        raise UsageError(
            f"--total-timesteps {args.total_timesteps} would run {below} env steps: the {warmup}-step warm-up, "
            f"then collects of {steps_per_collect} env steps; use {below} or {below + steps_per_collect}"
        )
    if args.device == "cuda":
        import torch  # only here: the checks of every other run load no torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda was requested but CUDA is not available")
    check_plasticity_args(
        args,
        has_target_network=True,
        samples_available=(args.learning_starts, "--learning-starts, the replay data present at the first probe"),
    )
    return steps_per_collect, gradient_steps, args.target_update_period


def warmup_length(args: QLearningArgs) -> int:
    """Random-action env steps before training: --learning-starts in whole rounds over the envs."""
    return math.ceil(args.learning_starts / args.num_envs) * args.num_envs


def fit_log_interval(args: QLearningArgs, steps_per_collect: int) -> None:
    """A run shorter than the warm-up plus one log interval logs (and checkpoints) at the
    largest interval that fits; one with no room for a single collect after the warm-up is refused."""
    warmup = warmup_length(args)
    training = args.total_timesteps - warmup
    if training < steps_per_collect:
        raise UsageError(
            f"--total-timesteps {args.total_timesteps} leaves no training after the warm-up "
            f"({warmup} env steps of --learning-starts); give at least {warmup + steps_per_collect}"
        )
    if training < epoch_length(args, steps_per_collect):
        fitted = training // steps_per_collect * steps_per_collect
        print(
            f"--log-every {args.log_every} is longer than the {training:,} env steps after the warm-up; "
            f"logging every {fitted:,} env steps"
        )
        args.log_every = fitted


def epoch_length(args: QLearningArgs, steps_per_collect: int) -> int:
    """Trainer epoch = one log interval, in whole collects."""
    return max(1, round(args.log_every / steps_per_collect)) * steps_per_collect
