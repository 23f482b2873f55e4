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
from runners.base.rng import torch_generator

# Teo et al. 2023: lambda = 0.01 for L2 and L2 Init, 0.001 for the singular-value penalty.
PAPER_COEFS = {"l2": 0.01, "l2_init": 0.01, "singular": 0.001}


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
