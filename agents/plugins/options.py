"""The options of every agent's plug-ins (``PlasticityArgs``) and their checks
(``check_plasticity_args``), in a module that imports neither torch nor Tianshou: ``clipzoo train
<agent> --help``, the registry and a sweep's checks read them without loading either.
Each field's docstring is its ``--help``; ``agents/plugins/assembly.py`` builds what they switch on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from runners.base.errors import UsageError, require_at_least

IntervalOption = int | Literal["target"]


@dataclass
class PlasticityArgs:
    help_group: ClassVar[str] = "plug_in"  # --help lists these options last, in a group of their own

    # Weight clipping (Elsayed et al. 2024)
    wc_kappa: float | None = None
    """weight clipping bound multiplier kappa for the trained (online) network (off when unset; paper: 2).
    Large returns need large outputs: on CartPole DQN, kappa 1-2 on every layer capped the Q-values
    and the return, kappa 8 matched Adam; there use kappa >= 4 or --wc-skip-last-layer (docs/reproductions.md)"""
    wc_bound_mode: Literal["paper", "init"] = "paper"
    """paper: s_l = 1/sqrt(fan_in); init: s_l = largest |w| of each tensor at the start"""
    wc_skip_last_layer: bool = False
    """leave the output layer(s) unclipped (DQN/Rainbow: the Q head; PPO: the actor and critic heads)"""

    # Network and optimizer (Lyle et al. 2023, sec. 4.1 and 6; Bernstein et al. 2020)
    layer_norm: bool = False
    """LayerNorm after every hidden layer (conv layers: over channels and positions)"""
    optimizer: Literal["adam", "sgd", "madam"] = "adam"
    """the optimizer; madam is the multiplicative optimizer with built-in clipping (lr ~0.01)"""
    adam_eps: float = 1e-8
    """Adam epsilon (Lyle et al. 4.1: larger values stabilise non-stationary training)"""
    adam_beta2: float = 0.999
    """Adam's (and Madam's) second-moment decay (Lyle et al. 4.1: 0.9)"""
    madam_p_scale: float = 3.0
    """Madam: each tensor is clipped to p_scale times its RMS at the first step"""
    madam_g_bound: float = 10.0
    """Madam: bound on the normalised gradient"""

    # Regularization (Kumar et al. 2023; Teo et al. 2023)
    reg: Literal["none", "l2", "l2_init", "singular"] = "none"
    """penalty added to the loss: L2, L2 Init (towards theta_0), or sigma_max^2 - sigma_min^2 of the penultimate features"""
    reg_coef: float | None = None
    """lambda (unset: Teo et al.'s 0.01 for l2 / l2_init, 0.001 for singular)"""
    reg_delta: float = 1.0
    """successive factor: layer l's penalty is weighted delta**l (1: the plain global penalty; paper grid 0.75, 1, 1.25)"""
    reg_form: Literal["loss", "decoupled"] = "loss"
    """loss: the term's gradient joins the loss gradient (through gradient clipping and Adam); decoupled: theta -= lr * grad R outside the optimizer (AdamW-style)"""
    reg_every: IntervalOption = 1
    """apply the penalty on every N-th gradient step; 'target': only on target-network updates (DQN/Rainbow)"""

    # Shrink & Perturb (Ash & Adams 2020), last-layer reset (Lyle et al. 2023)
    sp_every: IntervalOption = 0
    """Shrink & Perturb every N gradient steps (0: off; 'target': after each target-network update)"""
    sp_shrink: float = 0.2
    """Shrink & Perturb: theta <- (1 - shrink) theta + sigma theta_fresh"""
    sp_sigma: float = 0.1
    """Shrink & Perturb: scale of the fresh initialisation added"""
    reset_last_layer_every: IntervalOption = 0
    """re-initialise the output layer(s) and their optimizer state every N gradient steps (0: off; 'target': after each target-network update)"""

    # ReDo (Sokar et al. 2023), plasticity injection (Nikishin et al. 2023)
    redo_every: IntervalOption = 0
    """recycle dormant units (ReDo) every N gradient steps (0: off; 'target': after each target-network update)"""
    redo_tau: float = 0.1
    """ReDo: a hidden unit whose score E|h_i| / mean_j E|h_j| is <= tau is recycled (Sokar et al.'s 0.1 for agents with ReDo: better than 0 or 0.025 there)"""
    redo_samples: int = 256
    """ReDo: inputs each score is measured on (DQN/Rainbow: replay observations; PPO: the current rollout's); Sokar et al.'s code: 256"""
    inject_at: int = 0
    """plasticity injection after this gradient step (0: off): the head (the layers after the trunk) frozen, a new head learns the change"""

    # Probes (Lyle et al. 2023)
    plasticity_probe_every: int = 0
    """run the plasticity probe every N (PPO: updates; DQN/Rainbow: env steps); 0: off"""
    plasticity_probe_steps: int = 2000
    """optimizer steps of each probe fit (paper: 2000)"""
    plasticity_probe_samples: int = 512
    """inputs from the agent's data that the probe fits"""
    plasticity_probe_targets: int = 1
    """random target functions per probe, averaged (paper: 10)"""
    sharpness_every: int = 0
    """estimate the loss Hessian's largest eigenvalue every N (PPO: updates; DQN/Rainbow: env steps); 0: off"""
    sharpness_samples: int = 256
    """samples in the loss whose Hessian is measured"""
    sharpness_iterations: int = 20
    """Lanczos iterations (Hessian-vector products) per estimate"""
    sharpness_density: bool = False
    """also save the spectral density's quadrature nodes and weights (<run_dir>/sharpness/*.npz)"""


def check_plasticity_args(args: PlasticityArgs, has_target_network: bool, samples_available: tuple[int, str]) -> None:
    """Refuse settings that cannot mean anything, naming the flag; ``samples_available`` is
    (count, what it is) of the data the probes draw from."""
    if args.wc_kappa is not None and not (math.isfinite(args.wc_kappa) and args.wc_kappa > 0):
        raise UsageError(f"--wc-kappa must be a finite number > 0, got {args.wc_kappa}")
    for name in ("adam_eps", "madam_p_scale", "madam_g_bound", "sp_sigma"):
        value = getattr(args, name)
        if not (math.isfinite(value) and (value > 0 or (name == "sp_sigma" and value == 0))):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number > 0, got {value}")
    if not 0 <= args.adam_beta2 < 1:
        raise UsageError(f"--adam-beta2 must be in [0, 1), got {args.adam_beta2}")
    if not 0 <= args.sp_shrink <= 1:
        raise UsageError(f"--sp-shrink must be in [0, 1], got {args.sp_shrink}")
    if args.reg_coef is not None and not (math.isfinite(args.reg_coef) and args.reg_coef > 0):
        raise UsageError(f"--reg-coef must be a finite number > 0, got {args.reg_coef}")
    if not (math.isfinite(args.reg_delta) and args.reg_delta > 0):
        raise UsageError(f"--reg-delta must be a finite number > 0, got {args.reg_delta}")
    if args.reg == "singular" and args.reg_form == "decoupled":
        raise UsageError("--reg singular acts on features and exists only as a loss term; use --reg-form loss")
    for name in ("reg_every", "sp_every", "reset_last_layer_every", "redo_every"):
        value = getattr(args, name)
        if value == "target" and not has_target_network:
            raise UsageError(
                f"--{name.replace('_', '-')} target: this agent has no target network; give a number of gradient steps"
            )
        if value != "target" and (value < 0 or (value == 0 and name == "reg_every")):
            raise UsageError(
                f"--{name.replace('_', '-')} must be {'>= 1' if name == 'reg_every' else '>= 0'} or 'target', got {value}"
            )
    require_at_least(args, 0, "plasticity_probe_every", "sharpness_every")
    if not (math.isfinite(args.redo_tau) and 0 <= args.redo_tau < 1):
        raise UsageError(f"--redo-tau must be in [0, 1) (the mean score is 1), got {args.redo_tau}")
    if args.redo_every and args.optimizer == "madam":
        raise UsageError(
            "--redo-every with --optimizer madam: Madam's multiplicative steps keep ReDo's zeroed outgoing weights at 0; use adam or sgd"
        )
    if args.inject_at < 0:
        raise UsageError(f"--inject-at must be >= 0 (0: off), got {args.inject_at}")
    if args.inject_at and args.optimizer == "madam":
        raise UsageError(
            "--inject-at with --optimizer madam: Madam's multiplicative step on the combined head is not a step on the new head; use adam or sgd"
        )
    for name in ("reset_last_layer_every", "sp_every", "redo_every"):
        if args.inject_at and getattr(args, name):
            raise UsageError(
                f"--inject-at with --{name.replace('_', '-')}: it re-initialises weights of the heads that the "
                "injection freezes or copies; use one of them"
            )
    if args.inject_at and args.reg == "singular":
        raise UsageError(
            "--inject-at with --reg singular: the penalty acts on the output layers' features, which the "
            "injection doubles; use l2 or l2_init"
        )
    require_at_least(
        args,
        1,
        "plasticity_probe_samples",
        "plasticity_probe_targets",
        "sharpness_samples",
        "sharpness_iterations",
        "redo_samples",
    )
    require_at_least(args, 0, "plasticity_probe_steps")
    available, source = samples_available
    # ReDo's replay observations (the agents with a target network) are drawn with replacement; PPO's are rollout samples
    for name, every in (
        ("plasticity_probe_samples", args.plasticity_probe_every),
        ("sharpness_samples", args.sharpness_every),
        ("redo_samples", args.redo_every and not has_target_network),
    ):
        if every and getattr(args, name) > available:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)} exceeds {source} ({available})")
