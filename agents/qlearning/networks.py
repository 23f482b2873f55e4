"""Q-networks of the Tianshou-based agents; the network follows the observation space.

Images (C x 84 x 84 frames, uint8) get the Nature CNN trunk (Mnih et al. 2015) and are
scaled to [0, 1] inside the network; MinAtar grids (C x 10 x 10, bool) get the MinAtar
paper's trunk (Young & Tian 2019: one 3 x 3 conv with 16 channels, stride 1) and a
128-unit hidden layer; vectors get a 2 x 64 ReLU MLP trunk. Heads: a linear Q head
(DQN), or Rainbow's dueling, noisy, distributional (C51) head. Forward
follows Tianshou's convention ``(obs, state, info) -> (output, state)``. Activations
are ``nn.ReLU`` modules so the unit-health hooks see them. ``layer_norm=True`` puts a
LayerNorm after every hidden layer, before its ReLU (Lyle et al. 2023, sec. 6); after a
conv layer it normalises over channels and positions (GroupNorm with one group).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from tianshou.utils.net.discrete import NoisyLinear
from torch import nn


def hidden_layer(layer: nn.Module, width: int, layer_norm: bool, conv: bool = False) -> list[nn.Module]:
    """``layer``, optionally its LayerNorm, then ReLU."""
    if not layer_norm:
        return [layer, nn.ReLU()]
    return [layer, nn.GroupNorm(1, width) if conv else nn.LayerNorm(width), nn.ReLU()]


def nature_cnn_trunk(channels: int, layer_norm: bool = False) -> nn.Sequential:
    return nn.Sequential(
        *hidden_layer(nn.Conv2d(channels, 32, kernel_size=8, stride=4), 32, layer_norm, conv=True),
        *hidden_layer(nn.Conv2d(32, 64, kernel_size=4, stride=2), 64, layer_norm, conv=True),
        *hidden_layer(nn.Conv2d(64, 64, kernel_size=3, stride=1), 64, layer_norm, conv=True),
        nn.Flatten(),
    )


MINATAR_GRID = (10, 10)


def minatar_trunk(channels: int, layer_norm: bool = False) -> nn.Sequential:
    return nn.Sequential(
        *hidden_layer(nn.Conv2d(channels, 16, kernel_size=3, stride=1), 16, layer_norm, conv=True), nn.Flatten()
    )


def mlp_trunk(inputs: int, hidden: int = 64, layer_norm: bool = False) -> nn.Sequential:
    return nn.Sequential(
        *hidden_layer(nn.Linear(inputs, hidden), hidden, layer_norm),
        *hidden_layer(nn.Linear(hidden, hidden), hidden, layer_norm),
    )


class _TrunkNetwork(nn.Module):
    """Builds the trunk for an observation shape and turns Tianshou observations into tensors."""

    def __init__(self, observation_shape: tuple[int, ...], layer_norm: bool = False) -> None:
        super().__init__()
        self.is_image = len(observation_shape) == 3
        self.is_grid = self.is_image and tuple(observation_shape[1:]) == MINATAR_GRID  # object channels, already 0/1
        if self.is_image:
            make_trunk = minatar_trunk if self.is_grid else nature_cnn_trunk
            self.trunk = make_trunk(observation_shape[0], layer_norm)
            with torch.no_grad():
                self.feature_dim = self.trunk(torch.zeros(1, *observation_shape)).shape[1]
            self.hidden = 128 if self.is_grid else 512
        else:
            self.trunk = mlp_trunk(int(np.prod(observation_shape)), layer_norm=layer_norm)
            self.feature_dim = self.hidden = 64

    def features(self, obs) -> torch.Tensor:
        device = self.trunk[0].weight.device  # not next(self.parameters()): a module walk per call
        x = torch.as_tensor(obs, device=device, dtype=torch.float32)
        if self.is_image and not self.is_grid:
            x = x / 255.0
        elif not self.is_image:
            x = x.flatten(1)
        return self.trunk(x)


class QNetwork(_TrunkNetwork):
    """DQN: trunk, then (images) a 512-unit (MinAtar: 128) ReLU layer, then one Q-value per action."""

    def __init__(self, observation_shape: tuple[int, ...], actions: int, layer_norm: bool = False) -> None:
        super().__init__(observation_shape, layer_norm)
        if self.is_image:
            self.head = nn.Sequential(
                *hidden_layer(nn.Linear(self.feature_dim, self.hidden), self.hidden, layer_norm),
                nn.Linear(self.hidden, actions),
            )
        else:
            self.head = nn.Sequential(nn.Linear(self.feature_dim, actions))
        self.output_layers = (f"head.{len(self.head) - 1}",)
        self.injection_heads = {"head": 0}  # plasticity injection: the layers after the trunk

    def forward(self, obs, state=None, info=None):
        return self.head(self.features(obs)), state


class RainbowNetwork(_TrunkNetwork):
    """Rainbow: trunk, then dueling value/advantage streams of noisy layers over C51 atoms.

    Returns per-action probability distributions ``(batch, actions, atoms)``, as
    Tianshou's C51 policy expects.
    """

    def __init__(
        self,
        observation_shape: tuple[int, ...],
        actions: int,
        atoms: int,
        noisy_std: float,
        dueling: bool = True,
        noisy: bool = True,
        layer_norm: bool = False,
    ) -> None:
        super().__init__(observation_shape, layer_norm)
        self.actions, self.atoms = actions, atoms
        linear = partial(NoisyLinear, noisy_std=noisy_std) if noisy else nn.Linear

        def stream(outputs: int) -> nn.Sequential:
            return nn.Sequential(
                *hidden_layer(linear(self.feature_dim, self.hidden), self.hidden, layer_norm),
                linear(self.hidden, outputs),
            )

        self.advantage = stream(actions * atoms)
        self.value = stream(atoms) if dueling else None
        last = len(self.advantage) - 1
        self.output_layers = (f"advantage.{last}", f"value.{last}") if dueling else (f"advantage.{last}",)
        self.parallel_branches = ("advantage", "value") if dueling else ()
        self.injection_heads = dict.fromkeys(self.parallel_branches or ("advantage",), 0)  # each stream

    def forward(self, obs, state=None, info=None):
        features = self.features(obs)
        logits = self.advantage(features).view(-1, self.actions, self.atoms)
        if self.value is not None:
            value = self.value(features).view(-1, 1, self.atoms)
            logits = value + logits - logits.mean(dim=1, keepdim=True)
        return logits.softmax(dim=2), state
