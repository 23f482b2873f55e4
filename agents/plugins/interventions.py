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
* ``ReDo`` (Sokar et al. 2023): units whose score ``E|h_i| / mean_j E|h_j|`` is at most tau
  get fresh incoming weights, zero outgoing weights and zero optimizer moments.
* ``PlasticityInjection`` (Nikishin et al. 2023): at one step the head is frozen and a new
  one learns the change, ``h_old(x) + h_new(x) - h_copy(x)``.

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
import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from agents.diagnostics.units import redo_scores
from agents.plugins.clipping import DEFAULT_CLIPPED_NAMES, layer_fan_in, output_layer_names
from runners.base.rundir import isolated_rng

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
    grown = {
        f"{name}.{part}": (name, head) for name, head in injectable_heads(model).items() for part in ("new", "copy")
    }
    for name, module in model.named_modules():
        if layer_fan_in(module) is None or any(name.startswith(prefix + ".") for prefix in grown):
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
    # an injection's new head h_new stands where the head it replaces stands; its frozen copy is no layer to act on
    for prefix, (name, head) in grown.items():
        if prefix.endswith(".new"):
            for local, module in head.new.named_modules():
                if local and layer_fan_in(module) is not None:
                    index, _, rest = local.partition(".")
                    depths[f"{prefix}.{local}"] = depths[
                        f"{name}.{head.start + int(index)}{'.' + rest if rest else ''}"
                    ]
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
        raise ValueError(
            f"the optimizer updates none of the parameters {what} acts on; pass the optimizer of this model"
        )


def _positive(name: str, value, allow_zero: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
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

    def __init__(
        self, model: nn.Module, kind: str, coef: float, *, delta: float = 1.0, form: str = "loss", every: int = 1
    ) -> None:
        if kind not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {kind!r}")
        if form not in REGULARIZER_FORMS:
            raise ValueError(f"form must be one of {REGULARIZER_FORMS}, got {form!r}")
        if kind == "singular" and form == "decoupled":
            raise ValueError(
                "the singular-value penalty acts on features, so it exists only as a loss term (form='loss')"
            )
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
                self.feature_layers.append(
                    (name, model.get_submodule(name), self.coef * self.delta ** (depths[name] - 1))
                )
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
            return float(
                sum(
                    w * (t.param if a is None else t.param - a).square().sum()
                    for t, a, w in zip(self.tensors, self.anchors, self.weights)
                )
            )

    def metrics(self) -> dict[str, float]:
        return {"interventions/regularizer_penalty": self.penalty()}

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "coef": self.coef,
            "delta": self.delta,
            "form": self.form,
            "every": self.every,
            "updates": self.updates,
            "anchors": [a.cpu() if a is not None else None for a in self.anchors],
        }

    def load_state_dict(self, state: Mapping) -> None:
        settings = ("kind", "coef", "delta", "form", "every")
        if any(state[key] != getattr(self, key) for key in settings):
            raise ValueError(
                f"regularizer state {[state[k] for k in settings]} does not match {[getattr(self, k) for k in settings]}"
            )
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
        self.shrink, self.sigma = (
            _positive("shrink", shrink, allow_zero=True),
            _positive("sigma", sigma, allow_zero=True),
        )
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
            for (_, value), (_, new_value) in zip(
                layer.named_parameters(recurse=False), new.named_parameters(recurse=False)
            ):
                value.copy_(new_value)
                self.optimizer.state.pop(value, None)
            for (_, buffer), (_, new_buffer) in zip(
                layer.named_buffers(recurse=False), new.named_buffers(recurse=False)
            ):
                buffer.copy_(new_buffer)


# ---------------------------------------------------------------- ReDo
# The modules whose output ReDo scores: the nonlinearity after each hidden layer.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.Tanh,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Softplus,
    nn.Mish,
)


@dataclass(frozen=True)
class NextLayer:
    """A layer fed by a hidden layer's units: unit i owns its input columns ``[i * per_unit, (i + 1) * per_unit)``
    (``per_unit`` > 1 where a conv layer's channels are flattened into a linear layer, channel-major as
    ``nn.Flatten`` lays out NCHW: channel c is columns ``c * H * W`` to ``(c + 1) * H * W - 1``)."""

    name: str
    module: nn.Module
    per_unit: int


@dataclass(frozen=True)
class HiddenLayer:
    """A layer whose output units (Linear: features, ConvNd: channels) ReDo scores and recycles."""

    name: str
    module: nn.Module
    units: int
    activation: nn.Module  # its output is what is scored
    norms: tuple[
        str, ...
    ]  # modules between the layer and the activation with per-unit parameters (LayerNorm, GroupNorm)
    next_layers: tuple[NextLayer, ...]


def _unit_count(name: str, module: nn.Module) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed or module.groups != 1:
            raise ValueError(f"ReDo recycles channels of plain convolutions; {name} is transposed or grouped")
        return module.out_channels
    units = getattr(module, "out_features", None)
    if not isinstance(units, int):
        raise ValueError(f"ReDo cannot tell the units of {name} ({type(module).__name__})")
    return units


def _input_count(name: str, module: nn.Module) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed or module.groups != 1:
            raise ValueError(f"ReDo zeroes input channels of plain convolutions; {name} is transposed or grouped")
        return module.in_channels
    return module.in_features


def redo_layers(model: nn.Module) -> list[HiddenLayer]:
    """The hidden layers of ``model`` with what ReDo needs of each: its scored activation, its norms and the
    layers its units feed.

    Every affine layer that is not an output layer (``output_layer_names``) is hidden. The layers it feeds
    come from ``layer_depths``, the forward path the other interventions use: a layer at depth l feeds the
    layer at depth l + 1 of its own branch; the last layer of the shared trunk feeds the first layer of every
    branch in ``model.parallel_branches`` (Rainbow's dueling streams). The scored activation is the first
    activation module after the layer in its ``nn.Sequential``; per-unit norms (LayerNorm, GroupNorm) between
    the two are recycled with the layer.
    """
    depths = layer_depths(model)
    outputs = set(output_layer_names(model))
    branches = tuple(getattr(model, "parallel_branches", ()))

    def branch_of(name: str) -> str | None:
        return next((b for b in branches if name == b or name.startswith(b + ".")), None)

    layers = []
    for name, depth in depths.items():
        if name in outputs:
            continue
        module, branch = model.get_submodule(name), branch_of(name)
        units = _unit_count(name, module)
        following = [n for n, d in depths.items() if d == depth + 1 and branch_of(n) == branch]
        if not following and branch is None:  # the trunk's last layer feeds every branch
            following = [n for n, d in depths.items() if d == depth + 1 and branch_of(n) is not None]
        if not following:
            raise ValueError(
                f"{name} feeds no later layer along the forward path; if it is an output layer, list it in model.output_layers"
            )
        next_layers = []
        for next_name in following:
            next_module = model.get_submodule(next_name)
            inputs = _input_count(next_name, next_module)
            flattened = isinstance(module, nn.modules.conv._ConvNd) and not isinstance(
                next_module, nn.modules.conv._ConvNd
            )
            if inputs != units and not (flattened and inputs % units == 0):
                raise ValueError(f"{name} has {units} units but the layer after it, {next_name}, takes {inputs} inputs")
            next_layers.append(NextLayer(next_name, next_module, inputs // units))
        parent_name, _, index = name.rpartition(".")
        parent = model.get_submodule(parent_name)  # "" is the model itself
        if not isinstance(parent, nn.Sequential):
            raise ValueError(f"ReDo finds the activation after {name} in its nn.Sequential; {name} is not in one")
        activation, norms = None, []
        for offset, sibling in enumerate(list(parent)[int(index) + 1 :], start=int(index) + 1):
            if layer_fan_in(sibling) is not None:
                break
            if isinstance(sibling, ACTIVATION_TYPES):
                activation = sibling
                break
            if any(t.shape == (units,) for t in [*sibling.parameters(recurse=False), *sibling.buffers(recurse=False)]):
                norms.append(f"{parent_name}.{offset}" if parent_name else str(offset))
        if activation is None:
            raise ValueError(f"no activation follows {name} in its nn.Sequential, so ReDo has nothing to score")
        layers.append(HiddenLayer(name, module, units, activation, tuple(norms), tuple(next_layers)))
    if not layers:
        raise ValueError(f"{type(model).__name__} has no hidden layers for ReDo to recycle")
    return layers


def _trained(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad]


class ReDo(_IntervalPlugin):
    """Recycling dormant units (Sokar et al. 2023, "The dormant neuron phenomenon in deep RL";
    their code: google/dopamine labs/redo).

    At each event a batch from ``sample_inputs()`` is run through ``forward(model, batch)`` in eval
    mode (noisy layers use their means, norm statistics are not updated) without gradients. Each
    hidden unit's score ``s_i = E|h_i| / (mean_j E|h_j| + 1e-9)`` (``units.redo_scores``) is taken
    over the batch (and positions, for a channel) on the layer's activation output, i.e. after its
    LayerNorm and nonlinearity, as Sokar et al. score their ``*_act`` outputs. A unit with
    ``s_i <= tau`` is recycled:

    * incoming: its rows of every trained tensor of the layer (weight, bias; noisy layers: mu and
      sigma, so sigma returns to its initial value) and its entries of the norms' gains and shifts
      take the values of ``fresh_model()`` (the agent's own initialiser), drawn on the plug-in's
      stream (event n always draws the same network);
    * outgoing: its input columns of every layer it feeds are set to 0 (noisy layers: mu and sigma,
      so the unit contributes nothing with or without noise);
    * the optimizer state of the touched entries (Adam's exp_avg and exp_avg_sq, any state tensor
      shaped like its parameter) is set to 0; step counts are left alone, as in Sokar et al.'s code.

    ``metrics()``: ``redo/recycled_frac`` (recycled / hidden units at the last event) and
    ``redo/recycled_units``. ``sample_inputs`` may carry a random stream of its own in
    ``state_dict()`` / ``load_state_dict()``: it is checkpointed with the plug-in.
    """

    tag = "redo_events"

    def __init__(
        self,
        model: nn.Module,
        fresh_model: Callable[[], nn.Module],
        interval: Interval,
        *,
        tau: float,
        sample_inputs: Callable[[], torch.Tensor],
        forward: Callable[[nn.Module, torch.Tensor], object] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(model, fresh_model, interval, seed)
        self.tau = _positive("tau", tau, allow_zero=True)
        self.sample_inputs = sample_inputs
        self.forward = forward or (lambda network, inputs: network(inputs))
        self.layers = redo_layers(model)
        self.hidden_units = sum(layer.units for layer in self.layers)
        self.last_recycled: int | None = None  # units recycled at the last event

    def scores(self) -> list[torch.Tensor]:
        """Every hidden layer's ReDo scores on a fresh batch of inputs, in ``self.layers`` order."""
        inputs = self.sample_inputs()
        recorded: dict[int, list[torch.Tensor]] = {index: [] for index in range(len(self.layers))}
        handles = [
            layer.activation.register_forward_hook(lambda m, i, out, index=index: recorded[index].append(out.detach()))
            for index, layer in enumerate(self.layers)
        ]
        modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        try:
            with torch.no_grad():
                self.forward(self.model, inputs)
        finally:
            for handle in handles:
                handle.remove()
            for module, mode in modes:
                module.training = mode
        missing = [layer.name for index, layer in enumerate(self.layers) if not recorded[index]]
        if missing:
            raise RuntimeError(f"ReDo's forward pass never reached the activations after {missing}")
        return [redo_scores(torch.cat(recorded[index])) for index in range(len(self.layers))]

    @torch.no_grad()
    def apply_now(self) -> None:
        dormant = [score <= self.tau for score in self.scores()]
        count = int(sum(int(mask.sum()) for mask in dormant))
        if count:
            self._recycle(dormant, self._fresh())
        self.last_recycled = count
        self.events += 1

    def _clear_state(self, param: torch.Tensor, index) -> None:
        state = self.optimizer.state.get(param) if self.optimizer is not None else None
        for value in (state or {}).values():
            if torch.is_tensor(value) and value.shape == param.shape:
                value[index] = 0

    def _recycle(self, dormant: list[torch.Tensor], fresh: nn.Module) -> None:
        # Incoming weights of every layer first, then the outgoing ones, as Sokar et al.'s code: a weight
        # joining a recycled unit of one layer to a recycled unit of the next ends at 0.
        recycled = [(layer, mask) for layer, mask in zip(self.layers, dormant) if mask.any()]
        for layer, mask in recycled:
            for owner in (layer.name, *layer.norms):
                module, new = self.model.get_submodule(owner), fresh.get_submodule(owner)
                fresh_tensors = {**dict(new.named_parameters(recurse=False)), **dict(new.named_buffers(recurse=False))}
                for local, param in module.named_parameters(recurse=False):
                    if param.requires_grad and param.ndim >= 1 and param.shape[0] == layer.units:
                        param[mask] = fresh_tensors[local][mask].to(param.dtype)
                        self._clear_state(param, mask)
                for local, buffer in module.named_buffers(recurse=False):  # e.g. BatchNorm's running statistics
                    if buffer.ndim >= 1 and buffer.shape[0] == layer.units and buffer.is_floating_point():
                        buffer[mask] = fresh_tensors[local][mask]
        for layer, mask in recycled:
            for following in layer.next_layers:
                columns = (slice(None), mask.repeat_interleave(following.per_unit))
                for _, param in _trained(following.module):
                    if param.ndim >= 2:  # weights (noisy layers: mu and sigma); the bias is not the unit's
                        param[columns] = 0
                        self._clear_state(param, columns)

    def metrics(self) -> dict[str, float]:
        if self.last_recycled is None:
            return {}
        return {
            "redo/recycled_frac": self.last_recycled / self.hidden_units,
            "redo/recycled_units": float(self.last_recycled),
        }

    def describe(self) -> str:
        when = (
            "after each target-network update"
            if self.interval.offset
            else f"every {self.interval.every} gradient step{'s' * (self.interval.every != 1)}"
        )
        return f"redo ({when}, tau {self.tau:g})"

    def state_dict(self) -> dict:
        inputs = getattr(self.sample_inputs, "state_dict", None)
        return {
            **super().state_dict(),
            "tau": self.tau,
            "last_recycled": self.last_recycled,
            "inputs": inputs() if inputs is not None else None,
        }

    def load_state_dict(self, state: Mapping) -> None:
        if state["tau"] != self.tau:
            raise ValueError(f"ReDo state has tau {state['tau']}, this one {self.tau}")
        super().load_state_dict(state)
        self.last_recycled = state["last_recycled"]
        if state.get("inputs") is not None and hasattr(self.sample_inputs, "load_state_dict"):
            self.sample_inputs.load_state_dict(state["inputs"])


# ---------------------------------------------------------------- plasticity injection
class InjectableHead(nn.Module):
    """The layers of a Sequential, those from ``start`` on being a head h that plasticity injection
    (Nikishin et al. 2023) can grow. Before the injection the forward is the Sequential's; after it,
    with z the head's input, ``h_old(z) + (h_new(z) - h_copy(z))``: h_old frozen, h_new a fresh head
    that trains, h_copy a frozen copy of its draw. The bracket is exactly 0 at the injection, so the
    output is bitwise unchanged; gradients reach the layers before ``start`` (the trunk) through all
    three heads, and the trunk trains on.

    The layers keep the Sequential's names (``head.0``, ``head.2``), so checkpoints and every plug-in
    that finds layers by name see the network they saw. h_new and h_copy are the children ``new`` and
    ``copy``, there from the start: target networks, optimizers and checkpoints hold the same tensors
    throughout, and until the injection they take no part in the forward (nothing learns them).
    ``injected`` is a frozen 0-d parameter, not a Python flag, so that everything that copies
    parameters (checkpoints, Tianshou's target-network sync) copies it too. A noisy h_copy uses
    h_new's noise (``share_noise``), so that equal parameters give equal outputs."""

    def __init__(self, layers: nn.Sequential, start: int) -> None:
        super().__init__()
        if not 0 <= start < len(layers):
            raise ValueError(f"the head starts at layer {start} of a Sequential of {len(layers)}")
        for name, layer in layers.named_children():
            self.add_module(name, layer)
        self.start, self.depth = start, len(layers)
        self.new = nn.Sequential(*copy.deepcopy(list(layers)[start:]))
        self.copy = nn.Sequential(*copy.deepcopy(list(layers)[start:])).requires_grad_(False)
        self.injected = nn.Parameter(torch.zeros(()), requires_grad=False)
        # what h_old trains until the injection (noisy layers' noise is a parameter that never does)
        self.trained_names = tuple(name for name, p in self.old_head().named_parameters() if p.requires_grad)

    def old_head(self) -> nn.Sequential:
        return nn.Sequential(*(self._modules[str(i)] for i in range(self.start, self.depth)))

    @property
    def is_injected(self) -> bool:
        return bool(self.injected)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.start):
            x = self._modules[str(i)](x)
        out = x
        for i in range(self.start, self.depth):
            out = self._modules[str(i)](out)
        if self.is_injected:
            out = out + (self.new(x) - self.copy(x))
        return out

    @torch.no_grad()
    def inject(self, drawn: nn.Sequential) -> None:
        """h_new and h_copy become ``drawn`` (the head's layers, freshly initialised); h_old freezes."""
        for new, frozen, layer in zip(self.new, self.copy, drawn, strict=True):
            new.load_state_dict(layer.state_dict())
            frozen.load_state_dict(layer.state_dict())
        self.injected.fill_(1.0)
        self._freeze_old_head()

    def _freeze_old_head(self) -> None:
        trained, injected = set(self.trained_names), self.is_injected
        for name, param in self.old_head().named_parameters():
            if name in trained:
                param.requires_grad_(not injected)
                if injected:
                    param.grad = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # a checkpoint: h_old frozen if it was
        super()._load_from_state_dict(*args, **kwargs)
        self._freeze_old_head()


def injectable_heads(model: nn.Module) -> dict[str, InjectableHead]:
    return {name: module for name, module in model.named_modules() if isinstance(module, InjectableHead)}


def with_injectable_heads(model: nn.Module) -> nn.Module:
    """``model`` with each Sequential named in its ``injection_heads`` ({attribute: index of the head's
    first layer}) made an ``InjectableHead``; its output layers gain h_new's and h_copy's. Built this
    way before any optimizer or target network sees it (``--inject-at``)."""
    heads = getattr(model, "injection_heads", None)
    if not heads:
        raise ValueError(f"{type(model).__name__} names no injection_heads, so plasticity injection cannot grow it")
    outputs = output_layer_names(model)
    for name, start in heads.items():
        setattr(model, name, InjectableHead(getattr(model, name), start))
        for output in [o for o in outputs if o.startswith(name + ".")]:
            index = int(output.removeprefix(name + ".").split(".")[0]) - start
            outputs += [f"{name}.new.{index}", f"{name}.copy.{index}"]
    model.output_layers = tuple(outputs)
    return model


def idle_modules(model: nn.Module) -> set[int]:
    """ids of the modules that draw no noise of their own: every h_copy (it takes h_new's) and h_new
    before the injection (unused), so that a run draws the noise it draws without the plug-in."""
    idle = set()
    for head in injectable_heads(model).values():
        idle |= {id(m) for m in head.copy.modules()}
        if not head.is_injected:
            idle |= {id(m) for m in head.new.modules()}
    return idle


@torch.no_grad()
def share_noise(model: nn.Module) -> None:
    """Each h_copy takes its h_new's noise (NoisyLinear's factorised eps): call it after sampling noise."""
    for head in injectable_heads(model).values():
        for new, frozen in zip(head.new.modules(), head.copy.modules()):
            for noise in ("eps_p", "eps_q"):
                if hasattr(new, noise):
                    getattr(frozen, noise).copy_(getattr(new, noise))


class PlasticityInjection:
    """Plasticity injection (Nikishin et al. 2023, "Deep reinforcement learning with plasticity
    injection") after gradient step ``at`` (at the start of step ``at + 1``, so after the clamp of
    weight clipping and every other plug-in's work on step ``at``): in each ``InjectableHead`` of the
    model (``with_injectable_heads``), h_old freezes and h_new and h_copy become one fresh draw of
    the head from ``fresh_model()``, on the plug-in's stream; h_new's optimizer state starts afresh.
    Afterwards h_new and the trunk train, h_old and h_copy do not. Whether a head is injected is
    part of the model's state (checkpoints, target-network syncs); this plug-in counts steps.
    """

    tag = "plasticity_injections"

    def __init__(self, model: nn.Module, fresh_model: Callable[[], nn.Module], at: int, *, seed: int = 0) -> None:
        if isinstance(at, bool) or not isinstance(at, int) or at < 1:
            raise ValueError(f"the injection step must be a whole number of steps >= 1, got {at!r}")
        self.model, self.fresh_model, self.at, self.seed = model, fresh_model, at, int(seed)
        self.heads = injectable_heads(model)
        if not self.heads:
            raise ValueError("the model has no InjectableHead: build it with with_injectable_heads(model)")
        self.updates = 0
        self._logged = False
        self.optimizer: torch.optim.Optimizer | None = None

    @property
    def injected(self) -> bool:
        return all(head.is_injected for head in self.heads.values())

    def new_parameters(self) -> list[nn.Parameter]:
        return [p for head in self.heads.values() for p in head.new.parameters() if p.requires_grad]

    def attach(self, optimizer: torch.optim.Optimizer) -> PlasticityInjection:
        if self.optimizer is not None:
            raise ValueError("PlasticityInjection is already attached")
        new = self.new_parameters()
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if not all(id(p) in optimized for p in new):
            raise ValueError(
                "the optimizer does not hold the new heads' parameters; build it after with_injectable_heads"
            )
        self.optimizer = optimizer
        handle = optimizer.register_step_pre_hook(self._before_step)
        hooks = getattr(optimizer, "_optimizer_step_pre_hooks", None)
        if hooks is not None:  # first of the pre-step hooks (a decoupled penalty's belongs to the next step)
            hooks.move_to_end(handle.id, last=False)
        optimizer.register_step_post_hook(self._after_step)
        return self

    def _before_step(self, optimizer, args, kwargs) -> None:
        if self.updates == self.at and not self.injected:
            self.inject_now()

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.updates += 1

    @torch.no_grad()
    def inject_now(self) -> None:
        if self.injected:
            raise RuntimeError("plasticity has already been injected")
        with isolated_rng(self.seed * 1_000_003):
            fresh = self.fresh_model()
        for name, head in self.heads.items():
            head.inject(fresh.get_submodule(name).old_head())
        if self.optimizer is not None:  # h_new is a new head: its optimizer state starts afresh
            for param in self.new_parameters():
                self.optimizer.state.pop(param, None)

    def head_shift(self) -> float:
        """``||h_new - h_copy||_2`` over every injected head: how far the new heads have moved."""
        with torch.no_grad():
            squares = [
                (new - frozen).square().sum()
                for head in self.heads.values()
                for new, frozen in zip(head.new.parameters(), head.copy.parameters())
                if new.requires_grad
            ]
            return float(sum(squares) ** 0.5)

    def metrics(self) -> dict[str, float]:
        if not self.injected:
            return {}
        event, self._logged = float(not self._logged), True
        return {f"interventions/{self.tag}": event, "interventions/injected_head_shift": self.head_shift()}

    def describe(self) -> str:
        return f"plasticity_injection (after gradient step {self.at}; heads: {', '.join(self.heads)})"

    def state_dict(self) -> dict:
        return {"at": self.at, "updates": self.updates, "logged": self._logged}

    def load_state_dict(self, state: Mapping) -> None:
        if state["at"] != self.at:
            raise ValueError(f"plasticity injection state is for step {state['at']}, this one for {self.at}")
        self.updates, self._logged = int(state["updates"]), bool(state["logged"])
