"""The plug-ins the plasticity options switch on, built and attached in one place.

``PlasticityArgs`` (``agents/plugins/options.py``) is a base of each agent's ``Args``, so PPO, DQN and Rainbow take the
same flags (``--layer-norm``, ``--optimizer madam``, ``--reg l2-init --reg-delta 1.25``,
``--sp-every``, ``--reset-last-layer-every``, ``--redo-every``, ``--inject-at``, the probes' intervals)
with the same meaning.
``PlasticityPlugins`` builds the interventions and the weight clipping the options ask for on
one network and attaches them to its optimizer, every agent through it: weight clipping last, so
its clamp has the last word on every step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from agents.plugins.clipping import WeightClipping
from agents.plugins.interventions import (
    Interval,
    LastLayerReset,
    LayerRegularizer,
    PlasticityInjection,
    ReDo,
    ShrinkAndPerturb,
    with_injectable_heads,
)
from agents.plugins.optimizers import make_optimizer
from agents.plugins.options import IntervalOption, PlasticityArgs
from runners.base.errors import UsageError
from runners.base.rng import torch_generator

# Teo et al. 2023: lambda = 0.01 for L2 and L2 Init, 0.001 for the singular-value penalty.
PAPER_COEFS = {"l2": 0.01, "l2_init": 0.01, "singular": 0.001}


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
    for name in ("plasticity_probe_every", "sharpness_every"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
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
    for name in (
        "plasticity_probe_samples",
        "plasticity_probe_targets",
        "sharpness_samples",
        "sharpness_iterations",
        "redo_samples",
    ):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.plasticity_probe_steps < 0:
        raise UsageError(f"--plasticity-probe-steps must be >= 0, got {args.plasticity_probe_steps}")
    available, source = samples_available
    # ReDo's replay observations (the agents with a target network) are drawn with replacement; PPO's are rollout samples
    for name, every in (
        ("plasticity_probe_samples", args.plasticity_probe_every),
        ("sharpness_samples", args.sharpness_every),
        ("redo_samples", args.redo_every and not has_target_network),
    ):
        if every and getattr(args, name) > available:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)} exceeds {source} ({available})")


def grown_for_plugins(args: PlasticityArgs, network: nn.Module) -> nn.Module:
    """The agent's network as the plug-ins need it built, before any optimizer or target network
    sees it: with ``--inject-at``, its heads are ``InjectableHead``s (h_new and h_copy in place)."""
    return with_injectable_heads(network) if args.inject_at else network


def agent_optimizer(args, params, fused: bool = False):
    """The optimizer the options describe, over ``params`` (also the plasticity probe's)."""
    return make_optimizer(
        params,
        args.optimizer,
        args.learning_rate,
        adam_eps=args.adam_eps,
        adam_beta2=args.adam_beta2,
        madam_p_scale=args.madam_p_scale,
        madam_g_bound=args.madam_g_bound,
        fused=fused,
    )


def _interval(value: IntervalOption, target_period: int | None) -> Interval | None:
    if value == "target":
        return Interval(target_period, offset=1)
    return Interval(value) if value else None


class RolloutObservations:
    """ReDo's inputs for PPO: ``samples`` of the observations ``observations()`` returns (the current
    rollout's, looked up at each call), picked by a torch generator of their own (stream ``"redo"``)."""

    def __init__(self, observations: Callable[[], torch.Tensor], samples: int, seed: int) -> None:
        self.observations, self.samples = observations, int(samples)
        self.generator = torch_generator(seed, "redo")

    def __call__(self) -> torch.Tensor:
        observations = self.observations()
        picks = torch.randperm(observations.shape[0], generator=self.generator)[: self.samples]
        return observations[picks.to(observations.device)]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class PlasticityPlugins:
    """The interventions chosen by ``args`` on ``model``; ``target_period`` is the target
    network's period in gradient steps (None for agents without one). ReDo needs
    ``sample_inputs()``, a batch of the agent's inputs (DQN/Rainbow: ``agents.qlearning.replay.ReplayObservations``;
    PPO: ``rollout_inputs``),
    and ``forward(model, inputs)`` where ``model(inputs)`` is not the whole network."""

    rollout_inputs = staticmethod(
        lambda observations, args: RolloutObservations(observations, args.redo_samples, args.seed)
    )

    def __init__(
        self,
        model: nn.Module,
        args: PlasticityArgs,
        fresh_model: Callable[[], nn.Module],
        *,
        seed: int,
        target_period: int | None = None,
        sample_inputs: Callable[[], torch.Tensor] | None = None,
        forward: Callable[[nn.Module, torch.Tensor], object] | None = None,
        clipping_include: Iterable[str] = (),
    ) -> None:
        self.interventions: dict = {}
        if args.reg != "none":
            every = target_period if args.reg_every == "target" else args.reg_every
            coef = PAPER_COEFS[args.reg] if args.reg_coef is None else args.reg_coef
            self.interventions["regularizer"] = LayerRegularizer(
                model, args.reg, coef, delta=args.reg_delta, form=args.reg_form, every=every
            )
        if (interval := _interval(args.sp_every, target_period)) is not None:
            self.interventions["shrink_perturb"] = ShrinkAndPerturb(
                model, fresh_model, interval, shrink=args.sp_shrink, sigma=args.sp_sigma, seed=seed + 1
            )
        if (interval := _interval(args.reset_last_layer_every, target_period)) is not None:
            self.interventions["last_layer_reset"] = LastLayerReset(model, fresh_model, interval, seed=seed + 2)
        if (interval := _interval(args.redo_every, target_period)) is not None:
            if sample_inputs is None:
                raise ValueError("ReDo scores units on the agent's inputs: pass sample_inputs")
            self.interventions["redo"] = ReDo(
                model,
                fresh_model,
                interval,
                tau=args.redo_tau,
                sample_inputs=sample_inputs,
                forward=forward,
                seed=seed + 3,
            )
        if args.inject_at:
            self.interventions["plasticity_injection"] = PlasticityInjection(
                model, fresh_model, args.inject_at, seed=seed + 4
            )
        # weight clipping (Elsayed et al. 2024), with the extra parameter patterns the agent clips (Rainbow's sigmas)
        self.clipping = (
            None
            if args.wc_kappa is None
            else WeightClipping(
                model,
                args.wc_kappa,
                bound_mode=args.wc_bound_mode,
                skip_last_layer=args.wc_skip_last_layer,
                include=clipping_include,
            )
        )

    def attach(self, optimizer) -> PlasticityPlugins:
        for plugin in self.interventions.values():
            plugin.attach(optimizer)
        if self.clipping is not None:  # after the other plug-ins: the clamp has the last word
            self.clipping.attach(optimizer)
        return self

    @contextlib.contextmanager
    def paused(self):
        """Loss penalties off inside the block, for probes and diagnostics' own passes."""
        regularizer = self.interventions.get("regularizer")
        with regularizer.paused() if regularizer is not None else contextlib.nullcontext():
            yield

    def metrics(self) -> dict[str, float]:
        return {tag: value for plugin in self.interventions.values() for tag, value in plugin.metrics().items()}

    def describe(self) -> str:
        return (
            ", ".join(getattr(plugin, "describe", lambda: name)() for name, plugin in self.interventions.items())
            or "none"
        )

    def state_dict(self) -> dict:
        return {name: plugin.state_dict() for name, plugin in self.interventions.items()}

    def load_state_dict(self, state: dict | None) -> None:
        state = state or {}
        if set(state) != set(self.interventions):
            raise ValueError(f"checkpoint has interventions {sorted(state)}, this run {sorted(self.interventions)}")
        for name, plugin in self.interventions.items():
            plugin.load_state_dict(state[name])
