"""Weight clipping (Elsayed et al. 2024), the plug-in every agent shares.

After every optimizer step each clipped tensor is clamped elementwise to
``[-kappa * s_l, +kappa * s_l]``, where ``s_l`` is the bound of the uniform
distribution its layer was initialised from (see docs/metrics.md)::

    clipping = WeightClipping(model, kappa=2.0).attach(optimizer)
    ...
    optimizer.step()          # the clamp runs inside the step's post hook
    writer.add_scalar("wc/clipped_fraction", clipping.pop_clipped_fraction(), step)

Which tensors are clipped is decided per module, never by the order of
``parameters()``: weight and bias of Linear and ConvNd layers (and the mean
parameters of noisy layers) get ``s_l = 1/sqrt(fan_in)`` of their own module.
Everything else is left alone unless named in ``include``.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

BOUND_MODES = ("paper", "init")

# Parameters of an affine module that are clipped by default. mu_W / mu_bias are
# the mean weights of noisy layers (Tianshou's NoisyLinear); their sigmas are not.
DEFAULT_CLIPPED_NAMES = ("weight", "bias", "mu_W", "mu_bias")

# On CPU, multi-tensor clamps win for small networks (less per-call overhead) and one
# clamp_ per tensor wins for large ones (one pass over memory instead of two).
FOREACH_CPU_MAX_ENTRIES = 1 << 20


def layer_fan_in(module: nn.Module) -> int | None:
    """fan_in that PyTorch's default init uses for this module, or None if it has none."""
    if isinstance(module, nn.modules.conv._ConvNd):
        # in_channels / groups * prod(kernel_size); for transposed convs torch uses the
        # weight's second dimension, and so do we, to match the actual init distribution.
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
        return fan_in
    if isinstance(module, nn.Linear):
        return module.in_features
    in_features = getattr(module, "in_features", None)
    return in_features if isinstance(in_features, int) else None


def output_layer_names(model: nn.Module) -> list[str]:
    """Names of the model's output layers.

    A model with several heads (actor and critic, dueling streams) lists them in an
    ``output_layers`` attribute; otherwise the last affine module registered is used.
    """
    declared = getattr(model, "output_layers", None)
    if declared is not None:
        names = [declared] if isinstance(declared, str) else list(declared)
        known = dict(model.named_modules())
        missing = [name for name in names if name not in known]
        if missing:
            raise ValueError(f"model.output_layers names unknown modules {missing}")
        return names
    affine = [name for name, module in model.named_modules() if layer_fan_in(module) is not None]
    return affine[-1:]


@dataclass(frozen=True)
class ClippedTensor:
    name: str
    param: nn.Parameter
    scale: float  # s_l; the clamp bound is kappa * scale


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def count_outside_per_tensor(params: list[torch.Tensor], bounds: list[float]) -> torch.Tensor:
    """Entries with ``|w| > bound``, one reduction per tensor (fastest on CPU); the count
    stays a tensor, so the step never waits to read it (it is read when logged)."""
    return sum(p.abs().gt_(b).sum(dtype=torch.float64) for p, b in zip(params, bounds))


def count_outside_fused(params: list[torch.Tensor], bounds: list[float]) -> torch.Tensor:
    """Entries with ``|w| > bound`` with multi-tensor kernels; the count stays on the device."""
    excess = torch._foreach_abs(params)
    torch._foreach_sub_(excess, bounds)
    torch._foreach_clamp_min_(excess, 0.0)
    torch._foreach_sign_(excess)
    return torch.stack(torch._foreach_norm(excess, 1)).sum().double()


def _validate_kappa(kappa) -> float:
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not math.isfinite(kappa) or kappa <= 0:
        raise ValueError(f"kappa must be a finite number > 0, got {kappa!r}")
    return float(kappa)


class WeightClipping:
    """Clamp a model's affine weights to ``kappa * s_l`` after each optimizer step.

    Args:
        model: the network whose parameters are clipped.
        kappa: bound multiplier (paper: 2; grid {1, 2, 3, 4, 5}); must be > 0.
        bound_mode: "paper" uses ``s_l = 1/sqrt(fan_in)`` of the tensor's own layer;
            "init" uses the largest ``|w|`` of the tensor when the plug-in is created,
            so a non-default init is never clipped on step 1 (a zero-initialised bias
            takes its layer weight's value instead, so it is not pinned at zero).
        skip_last_layer: leave the output layer(s) unclipped (see ``output_layer_names``).
        include: glob patterns of parameter names to clip in addition to the default
            (e.g. ``"*.sigma_W"``, ``"actor_logstd"``, ``"*norm*.weight"``).
        exclude: glob patterns of parameter names never to clip; wins over everything.
        scales: ``{pattern: s}`` overriding ``s_l`` for matching parameters; needed in
            "paper" mode for an included parameter that has no layer fan_in.
        clip_every: clamp on every N-th optimizer step (1 = the paper's method).
        fraction_every: count the entries outside their bound before every N-th clamp,
            for ``wc/clipped_fraction`` (None: never). Counting costs about a fifth of
            an Adam step on CPU, so by default one clamp in 10 is measured, an unbiased
            sample of the interval's mean; 1 measures every clamp.
    """

    def __init__(
        self,
        model: nn.Module,
        kappa: float = 2.0,
        *,
        bound_mode: str = "paper",
        skip_last_layer: bool = False,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        scales: Mapping[str, float] | None = None,
        clip_every: int = 1,
        fraction_every: int | None = 10,
    ) -> None:
        self.kappa = _validate_kappa(kappa)
        if bound_mode not in BOUND_MODES:
            raise ValueError(f"bound_mode must be one of {BOUND_MODES}, got {bound_mode!r}")
        if not _is_positive_int(clip_every):
            raise ValueError(f"clip_every must be an integer >= 1, got {clip_every!r}")
        if fraction_every is not None and not _is_positive_int(fraction_every):
            raise ValueError(f"fraction_every must be an integer >= 1 or None, got {fraction_every!r}")
        self.bound_mode = bound_mode
        self.clip_every = clip_every
        self.fraction_every = fraction_every
        self.tensors = self._select(model, skip_last_layer, tuple(include), tuple(exclude), dict(scales or {}))
        self._params = [t.param for t in self.tensors]
        self._bounds = [self.kappa * t.scale for t in self.tensors]
        self._negative_bounds = [-b for b in self._bounds]
        self._entries_per_clamp = sum(p.numel() for p in self._params)
        self._hooks: dict[int, torch.utils.hooks.RemovableHandle] = {}
        self.optimizer_steps = 0
        self.clamps = 0
        self._reset_fraction_window()

    # ------------------------------------------------------------------ selection
    def _select(self, model, skip_last_layer, include, exclude, scales) -> list[ClippedTensor]:
        skipped_modules = set(output_layer_names(model)) if skip_last_layer else set()
        selected: list[ClippedTensor] = []
        seen: set[int] = set()
        for module_name, module in model.named_modules():
            fan_in = layer_fan_in(module)
            own_weight = next((p for n, p in module.named_parameters(recurse=False) if n in ("weight", "mu_W")), None)
            for local_name, param in module.named_parameters(recurse=False):
                name = f"{module_name}.{local_name}" if module_name else local_name
                if id(param) in seen or not param.requires_grad:
                    continue
                default = (
                    fan_in is not None and local_name in DEFAULT_CLIPPED_NAMES and module_name not in skipped_modules
                )
                if _matches(name, exclude) or not (default or _matches(name, include)):
                    continue
                if isinstance(param, nn.parameter.UninitializedParameter):
                    raise ValueError(
                        f"parameter {name!r} is uninitialised (lazy module); run a forward pass before attaching weight clipping"
                    )
                seen.add(id(param))
                selected.append(ClippedTensor(name, param, self._scale(name, param, fan_in, own_weight, scales)))
        if not selected:
            raise ValueError(
                f"weight clipping found nothing to clip in {type(model).__name__}: no Linear/Conv weights"
                f" (include={list(include)}, exclude={list(exclude)}, skip_last_layer={skip_last_layer})"
            )
        return selected

    def _scale(self, name, param, fan_in, own_weight, scales) -> float:
        override = next((float(s) for pattern, s in scales.items() if fnmatch.fnmatchcase(name, pattern)), None)
        if override is not None:
            if not math.isfinite(override) or override <= 0:
                raise ValueError(f"scale for {name!r} must be a finite number > 0, got {override!r}")
            return override
        if self.bound_mode == "paper":
            if fan_in is None:
                raise ValueError(
                    f"parameter {name!r} has no layer fan_in, so 'paper' mode has no bound for it;"
                    f" give one with scales={{{name!r}: s}} or use bound_mode='init'"
                )
            return 1.0 / math.sqrt(fan_in)
        largest = param.detach().abs().max().item()
        if largest == 0.0 and own_weight is not None and own_weight is not param:
            largest = own_weight.detach().abs().max().item()
        if largest == 0.0:
            raise ValueError(
                f"parameter {name!r} is all zeros, so 'init' mode gives a zero bound; set scales={{{name!r}: s}}"
            )
        return largest

    # ------------------------------------------------------------------ optimizer hook
    def attach(self, optimizer: torch.optim.Optimizer) -> WeightClipping:
        """Clip after every ``optimizer.step()``; returns self so it fits on one line."""
        if id(optimizer) in self._hooks:
            raise ValueError("weight clipping is already attached to this optimizer")
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if not any(id(p) in optimized for p in self._params):
            raise ValueError("the optimizer updates none of the clipped parameters; pass the optimizer of this model")
        self._hooks[id(optimizer)] = optimizer.register_step_post_hook(self._after_step)
        return self

    def detach(self) -> None:
        for handle in self._hooks.values():
            handle.remove()
        self._hooks.clear()

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.optimizer_steps += 1
        if self.optimizer_steps % self.clip_every == 0:
            self.clip_now()

    @torch.no_grad()
    def clip_now(self) -> None:
        """Apply the clamp once (also the 'clip once' warm-start experiment)."""
        if self.fraction_every is not None and self.clamps % self.fraction_every == 0:
            count = count_outside_fused if self._params[0].is_cuda else count_outside_per_tensor
            self._window_outside = self._window_outside + count(self._params, self._bounds)
            self._window_measured += 1
        if self._params[0].is_cuda or self._entries_per_clamp <= FOREACH_CPU_MAX_ENTRIES:
            torch._foreach_clamp_min_(self._params, self._negative_bounds)
            torch._foreach_clamp_max_(self._params, self._bounds)
        else:
            for param, bound in zip(self._params, self._bounds):
                param.clamp_(-bound, bound)
        self.clamps += 1

    # ------------------------------------------------------------------ reporting
    def _reset_fraction_window(self) -> None:
        self._window_outside: float | torch.Tensor = 0.0
        self._window_measured = 0

    def pop_clipped_fraction(self) -> float | None:
        """Mean fraction of clipped entries that were outside their bound before the
        clamp, over the clamps measured since the last call (``wc/clipped_fraction``);
        None if no clamp was measured."""
        if self._window_measured == 0:
            return None
        fraction = float(self._window_outside) / (self._window_measured * self._entries_per_clamp)
        self._reset_fraction_window()
        return fraction

    def bounds(self) -> dict[str, float]:
        """Clamp bound ``kappa * s_l`` of every clipped parameter, by name."""
        return {t.name: bound for t, bound in zip(self.tensors, self._bounds)}

    def max_violation(self) -> float:
        """Largest amount by which any clipped entry exceeds its bound (0 when all are inside)."""
        with torch.no_grad():
            return max(max(p.abs().max().item() - b, 0.0) for p, b in zip(self._params, self._bounds))

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "kappa": self.kappa,
            "bound_mode": self.bound_mode,
            "clip_every": self.clip_every,
            "names": [t.name for t in self.tensors],
            "scales": [t.scale for t in self.tensors],
            "optimizer_steps": self.optimizer_steps,
            "clamps": self.clamps,
            "window_outside": float(self._window_outside),
            "window_measured": self._window_measured,
        }

    def load_state_dict(self, state: Mapping) -> None:
        names = [t.name for t in self.tensors]
        mismatched = [key for key in ("kappa", "bound_mode", "clip_every") if state[key] != getattr(self, key)]
        if mismatched or state["names"] != names:
            what = (
                ", ".join(f"{key}: saved {state[key]!r} vs {getattr(self, key)!r}" for key in mismatched)
                or "clipped parameter names differ"
            )
            raise ValueError(f"weight clipping state does not match this plug-in ({what})")
        # Restore the saved scales: in "init" mode they came from the original init,
        # not from the trained weights this plug-in was rebuilt on.
        self.tensors = [ClippedTensor(t.name, t.param, float(s)) for t, s in zip(self.tensors, state["scales"])]
        self._bounds = [self.kappa * t.scale for t in self.tensors]
        self._negative_bounds = [-b for b in self._bounds]
        self.optimizer_steps = int(state["optimizer_steps"])
        self.clamps = int(state["clamps"])
        self._window_outside = float(state["window_outside"])
        self._window_measured = int(state["window_measured"])

    def __repr__(self) -> str:
        return f"WeightClipping(kappa={self.kappa}, bound_mode={self.bound_mode!r}, tensors={len(self.tensors)}, entries={self._entries_per_clamp})"
