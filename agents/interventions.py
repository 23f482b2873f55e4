"""Plasticity interventions from the papers, as plug-ins with weight clipping's interface:
built on a model, ``attach(optimizer)``, ``state_dict()`` / ``load_state_dict()``,
``metrics()`` for TensorBoard (docs/metrics.md)::

    regularizer = LayerRegularizer(model, "l2_init", coef=0.01, delta=1.25).attach(optimizer)
    ...
    loss.backward()      # the penalty's gradient is added as each parameter's gradient lands
    optimizer.step()

* ``LayerRegularizer``: L2, L2 Init (Kumar et al. 2023) and the singular-value penalty on
  penultimate features (Kumar et al. 2020), successive over layers (Teo et al. 2023):
  ``lambda * sum_l delta**l R(theta^l)``, on every update or every tau-th one.
* ``ShrinkAndPerturb`` (Ash & Adams 2020): ``theta <- (1 - lambda) theta + sigma theta_fresh``.
* ``LastLayerReset`` (Lyle et al. 2023, after Nikishin et al. 2022): the output layer(s)
  get fresh initial values and fresh optimizer state.

The tensors acted on are weight clipping's: weight and bias of every Linear/ConvNd layer
and the mean parameters of noisy layers; norm gains, log-stds and noisy sigmas are left
alone. Layers are counted as layers (weight and bias share ``delta**l``), along the
forward path: a model with parallel heads names them in ``parallel_branches`` and each
head's layers are numbered after the shared trunk (see ``layer_depths``).

Fresh values (perturbations, resets) come from ``fresh_model()``, a new network built by
the agent, so they follow the agent's own initialisation (orthogonal for PPO, PyTorch's
default for the Q-networks). They are drawn on their own random streams
(``isolated_rng``): the run's own draws are unchanged and a resumed run draws the same.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from agents.clipping import DEFAULT_CLIPPED_NAMES, layer_fan_in, output_layer_names
from runners.rundir import isolated_rng

REGULARIZERS = ("l2", "l2_init", "singular")
REGULARIZER_FORMS = ("loss", "decoupled")


# ---------------------------------------------------------------- layers
def layer_depths(model: nn.Module) -> dict[str, int]:
    """Depth l = 1..L of every affine module along the forward path, by module name.

    Modules are numbered in registration order; the modules under each name in
    ``model.parallel_branches`` (actor and critic, dueling streams) continue from the
    shared modules registered before them, each branch on its own.
    """
    branches = tuple(getattr(model, "parallel_branches", ()))
    depths: dict[str, int] = {}
    shared, within = 0, dict.fromkeys(branches, 0)
    for name, module in model.named_modules():
        if layer_fan_in(module) is None:
            continue
        branch = next((b for b in branches if name == b or name.startswith(b + ".")), None)
        if branch is None:
            if any(within.values()):
                raise ValueError(f"{name} is registered after a parallel branch; register the shared trunk first")
            shared += 1
            depths[name] = shared
        else:
            within[branch] += 1
            depths[name] = shared + within[branch]
    return depths


@dataclass(frozen=True)
class LayerTensor:
    name: str
    param: nn.Parameter
    depth: int


def layer_tensors(model: nn.Module) -> list[LayerTensor]:
    """The tensors interventions act on, each with its layer's depth."""
    depths = layer_depths(model)
    tensors = []
    for module_name, depth in depths.items():
        for local_name, param in model.get_submodule(module_name).named_parameters(recurse=False):
            if local_name in DEFAULT_CLIPPED_NAMES and param.requires_grad:
                tensors.append(LayerTensor(f"{module_name}.{local_name}", param, depth))
    if not tensors:
        raise ValueError(f"{type(model).__name__} has no Linear/Conv layers to act on")
    return tensors


@dataclass(frozen=True)
class Interval:
    """Optimizer steps between events. ``offset=1`` puts each event one step after a
    target-network sync (Tianshou syncs at the start of every tau-th update), so an event
    'at each target update' acts after the target has copied the online network."""

    every: int
    offset: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"an interval must be a whole number of steps >= 1, got {self.every!r}")

    def due(self, steps_done: int) -> bool:
        return steps_done > self.offset and (steps_done - self.offset) % self.every == 0


def _check_optimizer(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], what: str) -> None:
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not any(id(p) in optimized for p in params):
        raise ValueError(f"the optimizer updates none of the parameters {what} acts on; pass the optimizer of this model")


def _positive(name: str, value, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


# ---------------------------------------------------------------- regularization
class LayerRegularizer:
    """``lambda * sum_l delta**l R(theta^l)`` added to the agent's loss (Teo et al. 2023).

    Args:
        model: the trained network.
        kind: "l2" (``R = ||theta^l||^2``), "l2_init" (``R = ||theta^l - theta^l_0||^2``,
            theta_0 the values when the plug-in is built), or "singular"
            (``R = sigma_max(Phi)^2 - sigma_min(Phi)^2`` of the minibatch's penultimate
            features Phi, the inputs of each output layer, weighted by the depth of the
            layer that produced them).
        coef: lambda (Teo et al.: 0.01 for l2/l2_init, 0.001 for singular).
        delta: successive factor; delta = 1 is the plain, global penalty.
        form: "loss": the penalty's gradient is added to each parameter's gradient as
            backward produces it, exactly as if the term were in the loss, so it passes
            through gradient clipping and Adam's normalisation (Adam + L2 = torch's Adam
            ``weight_decay``). "decoupled": before each step, ``theta <- theta - lr *
            grad R`` outside the optimizer (Adam + L2 = torch's AdamW); l2/l2_init only.
        every: apply on updates t with ``t % every == 0`` (t counted from 0); with
            ``every = tau`` these are the updates that start with a target-network sync.
    """

    def __init__(self, model: nn.Module, kind: str, coef: float, *, delta: float = 1.0, form: str = "loss", every: int = 1) -> None:
        if kind not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {kind!r}")
        if form not in REGULARIZER_FORMS:
            raise ValueError(f"form must be one of {REGULARIZER_FORMS}, got {form!r}")
        if kind == "singular" and form == "decoupled":
            raise ValueError("the singular-value penalty acts on features, so it exists only as a loss term (form='loss')")
        self.kind, self.form = kind, form
        self.coef, self.delta = _positive("coef", coef), _positive("delta", delta)
        self.every = Interval(every).every
        self.updates = 0
        self.suspended = False
        self._handles: list = []
        self._feature_penalty = [0.0, 0]  # sum and count of penalties applied since the last report
        if kind == "singular":
            depths = layer_depths(model)
            self.feature_layers = []
            for name in output_layer_names(model):
                if depths[name] < 2:
                    raise ValueError(f"output layer {name} is the first layer, so it has no penultimate features")
                self.feature_layers.append((name, model.get_submodule(name), self.coef * self.delta ** (depths[name] - 1)))
            self.tensors = []
        else:
            self.tensors = layer_tensors(model)
        self.weights = [self.coef * self.delta**t.depth for t in self.tensors]
        self.anchors = [t.param.detach().clone() if kind == "l2_init" else None for t in self.tensors]

    @property
    def active(self) -> bool:
        """Whether the update being computed now carries the penalty."""
        return self.updates % self.every == 0 and not self.suspended

    def attach(self, optimizer: torch.optim.Optimizer) -> LayerRegularizer:
        if self._handles:
            raise ValueError("the regularizer is already attached")
        if self.kind == "singular":
            params = [p for _, module, _ in self.feature_layers for p in module.parameters()]
            for _, module, weight in self.feature_layers:
                self._handles.append(module.register_forward_pre_hook(self._feature_hook(weight)))
        else:
            params = [t.param for t in self.tensors]
            if self.form == "loss":
                for index, param in enumerate(params):
                    self._handles.append(param.register_post_accumulate_grad_hook(self._gradient_hook(index)))
            else:
                self._handles.append(optimizer.register_step_pre_hook(self._decoupled_step))
        _check_optimizer(optimizer, params, "the regularizer")
        self._handles.append(optimizer.register_step_post_hook(self._count))
        return self

    def _count(self, optimizer, args, kwargs) -> None:
        self.updates += 1

    def _gradient_hook(self, index: int):
        def add_penalty_gradient(param: torch.Tensor) -> None:
            if self.active:
                anchor = self.anchors[index]  # looked up now: a resumed run loads the saved theta_0
                with torch.no_grad():
                    param.grad.add_(param if anchor is None else param - anchor, alpha=2 * self.weights[index])

        return add_penalty_gradient

    @torch.no_grad()
    def _decoupled_step(self, optimizer, args, kwargs) -> None:
        if not self.active:
            return
        learning_rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        for tensor, anchor, weight in zip(self.tensors, self.anchors, self.weights):
            lr = learning_rates.get(id(tensor.param))
            if lr is not None:
                tensor.param.sub_(tensor.param if anchor is None else tensor.param - anchor, alpha=2 * lr * weight)

    def _feature_hook(self, weight: float):
        # Never traced by torch.compile: the hook reads Python state (the update count) and
        # registers a tensor hook, so under a compiled loss it runs eagerly at a graph break.
        @torch.compiler.disable
        def penalize(module, inputs) -> None:
            features = inputs[0]
            if not (self.active and torch.is_grad_enabled() and features.requires_grad):
                return
            gradient, penalty = singular_penalty_gradient(features.detach().flatten(1))
            self._feature_penalty[0] += weight * penalty
            self._feature_penalty[1] += 1
            # The tensor hook adds weight * dR/dPhi to the gradient arriving at Phi: the
            # same gradient as adding weight * R(Phi) to the loss, without touching it.
            features.register_hook(lambda grad: grad + (weight * gradient).view_as(grad))

        return penalize

    @contextlib.contextmanager
    def paused(self):
        """No penalty inside the block (probes and diagnostics run their own passes)."""
        previous, self.suspended = self.suspended, True
        try:
            yield
        finally:
            self.suspended = previous

    def penalty(self) -> float:
        """lambda * sum_l delta**l R(theta^l) now (singular: mean over the minibatches since the last call)."""
        if self.kind == "singular":
            (total, count), self._feature_penalty = self._feature_penalty, [0.0, 0]
            return total / count if count else float("nan")
        with torch.no_grad():
            return float(sum(w * (t.param if a is None else t.param - a).square().sum() for t, a, w in zip(self.tensors, self.anchors, self.weights)))

    def metrics(self) -> dict[str, float]:
        return {"interventions/regularizer_penalty": self.penalty()}

    def state_dict(self) -> dict:
        return {"kind": self.kind, "coef": self.coef, "delta": self.delta, "form": self.form, "every": self.every,
                "updates": self.updates, "anchors": [a.cpu() if a is not None else None for a in self.anchors]}

    def load_state_dict(self, state: Mapping) -> None:
        settings = ("kind", "coef", "delta", "form", "every")
        if any(state[key] != getattr(self, key) for key in settings):
            raise ValueError(f"regularizer state {[state[k] for k in settings]} does not match {[getattr(self, k) for k in settings]}")
        self.updates = int(state["updates"])
        self.anchors = [None if a is None else a.to(t.param.device) for a, t in zip(state["anchors"], self.tensors)]


def singular_penalty_gradient(features: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(dR/dPhi, R)`` for ``R = sigma_max(Phi)^2 - sigma_min(Phi)^2``; ``d sigma_i = u_i v_i^T``."""
    u, s, vh = torch.linalg.svd(features, full_matrices=False)
    gradient = 2 * (s[0] * torch.outer(u[:, 0], vh[0]) - s[-1] * torch.outer(u[:, -1], vh[-1]))
    return gradient, (s[0] ** 2 - s[-1] ** 2).item()


# ---------------------------------------------------------------- perturbations and resets
class _IntervalPlugin:
    """Acts on the model after every ``interval``-th optimizer step, on its own random streams."""

    tag = ""

    def __init__(self, model: nn.Module, fresh_model: Callable[[], nn.Module], interval: Interval, seed: int) -> None:
        self.model, self.fresh_model, self.interval, self.seed = model, fresh_model, interval, int(seed)
        self.updates = 0
        self.events = 0
        self._events_logged = 0
        self.optimizer: torch.optim.Optimizer | None = None

    def attach(self, optimizer: torch.optim.Optimizer):
        if self.optimizer is not None:
            raise ValueError(f"{type(self).__name__} is already attached")
        _check_optimizer(optimizer, list(self.model.parameters()), type(self).__name__)
        self.optimizer = optimizer
        optimizer.register_step_post_hook(self._after_step)
        return self

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.updates += 1
        if self.interval.due(self.updates):
            self.apply_now()

    def _fresh(self) -> nn.Module:
        """A newly initialised copy of the architecture; event n always draws the same one."""
        with isolated_rng(self.seed * 1_000_003 + self.events):
            fresh = self.fresh_model()
        return fresh.to(next(self.model.parameters()).device)

    @torch.no_grad()
    def apply_now(self) -> None:
        self._apply(self._fresh())
        self.events += 1

    def _apply(self, fresh: nn.Module) -> None:
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        count, self._events_logged = self.events - self._events_logged, self.events
        return {f"interventions/{self.tag}": float(count)}

    def state_dict(self) -> dict:
        return {"interval": (self.interval.every, self.interval.offset), "updates": self.updates, "events": self.events}

    def load_state_dict(self, state: Mapping) -> None:
        if tuple(state["interval"]) != (self.interval.every, self.interval.offset):
            raise ValueError(f"{type(self).__name__} state has interval {state['interval']}, this one {self.interval}")
        self.updates, self.events = int(state["updates"]), int(state["events"])
        self._events_logged = self.events


class ShrinkAndPerturb(_IntervalPlugin):
    """``theta <- (1 - shrink) * theta + sigma * theta_fresh`` (Ash & Adams 2020; docs/metrics.md),
    theta_fresh a new draw from the network's own initialisation."""

    tag = "shrink_perturb_events"

    def __init__(self, model, fresh_model, interval: Interval, *, shrink: float, sigma: float, seed: int = 0) -> None:
        super().__init__(model, fresh_model, interval, seed)
        self.shrink, self.sigma = _positive("shrink", shrink, allow_zero=True), _positive("sigma", sigma, allow_zero=True)
        if self.shrink > 1:
            raise ValueError(f"shrink must be in [0, 1], got {shrink}")
        self.tensors = layer_tensors(model)

    def _apply(self, fresh: nn.Module) -> None:
        fresh_params = dict(fresh.named_parameters())
        for tensor in self.tensors:
            tensor.param.mul_(1 - self.shrink).add_(fresh_params[tensor.name], alpha=self.sigma)


class LastLayerReset(_IntervalPlugin):
    """Fresh values for the output layer(s) and fresh optimizer state for their parameters,
    so the new layer is trained from scratch (Adam's moments of the old one would
    otherwise steer it)."""

    tag = "last_layer_resets"

    def __init__(self, model, fresh_model, interval: Interval, *, seed: int = 0) -> None:
        super().__init__(model, fresh_model, interval, seed)
        self.layers = output_layer_names(model)

    def _apply(self, fresh: nn.Module) -> None:
        for name in self.layers:
            layer, new = self.model.get_submodule(name), fresh.get_submodule(name)
            for (_, value), (_, new_value) in zip(layer.named_parameters(recurse=False), new.named_parameters(recurse=False)):
                value.copy_(new_value)
                self.optimizer.state.pop(value, None)
            for (_, buffer), (_, new_buffer) in zip(layer.named_buffers(recurse=False), new.named_buffers(recurse=False)):
                buffer.copy_(new_buffer)
