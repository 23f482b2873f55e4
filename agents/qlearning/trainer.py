"""Tianshou's off-policy trainer at an exact replay ratio (``collection_plan`` in ``options.py``
picks the collect size), with the plug-ins on its optimizer.

* ``PluginOptimizerFactory``: the optimizer factory Tianshou calls to build the optimizer; it
  attaches the plasticity plug-ins (weight clipping last) and counts gradient steps.
* ``QuietOffPolicyTrainer``: Tianshou 2.0.1's gradient-update progress bar overrides
  ``show_progress=False`` whenever a collect triggers 20 or more gradient steps.
* ``ExactBudgetTrainer``: the trainer runs whole epochs only; this one shortens the last.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tianshou.algorithm.optim import OptimizerFactory
from tianshou.trainer import OffPolicyTrainer

from agents.plugins.assembly import PlasticityPlugins
from agents.plugins.clipping import WeightClipping
from agents.qlearning.tianshou_internals import (
    trainer_env_step,
)


# ---------------------------------------------------------------- optimizer with the plug-ins
class PluginOptimizerFactory(OptimizerFactory):
    """The policy network's optimizer, with the plug-ins attached to the online network.

    Tianshou builds the optimizer through this factory, so the algorithm's code is
    untouched: the interventions and the clamp run in the optimizer's hooks.

    Args:
        build_optimizer: ``params -> optimizer``.
        build_plugins: ``network -> PlasticityPlugins`` (not yet attached; weight clipping among
            them, attached last), or None.
    """

    def __init__(
        self,
        build_optimizer: Callable,
        build_plugins: Callable[[torch.nn.Module], PlasticityPlugins] | None = None,
    ) -> None:
        super().__init__()
        self.build_optimizer = build_optimizer
        self.build_plugins = build_plugins
        self.plugins: PlasticityPlugins | None = None
        self.clipping: WeightClipping | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.gradient_steps = 0

    def _create_optimizer_for_params(self, params) -> torch.optim.Optimizer:
        return self.build_optimizer(params)

    def create_instances(self, module: torch.nn.Module):
        optimizer, scheduler = super().create_instances(module)
        network = getattr(module, "model", module)  # the online Q-network of the policy
        if self.build_plugins is not None:
            self.plugins = self.build_plugins(network).attach(optimizer)
            self.clipping = self.plugins.clipping
        optimizer.register_step_post_hook(self._after_step)
        self.optimizer = optimizer
        return optimizer, scheduler

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.gradient_steps += 1


# ---------------------------------------------------------------- the trainer
class QuietOffPolicyTrainer(OffPolicyTrainer):
    """OffPolicyTrainer whose progress bars stay off when ``show_progress`` is False.

    A stop signal is honoured between collects, after the update block it arrives in: the
    run's state is whole only there, so its checkpoint resumes exactly (a block is
    steps-per-collect x replay-ratio gradient steps: 80 at the MinAtar RR 8 presets)."""

    @property
    def _pbar(self):
        bar = super()._pbar
        if self.params.show_progress:
            return bar

        def silent(*args, **kwargs):
            kwargs["disable"] = True
            return bar(*args, **kwargs)

        return silent


class ExactBudgetTrainer(QuietOffPolicyTrainer):
    """Epochs of ``params.epoch_num_steps`` env steps that end at its multiples, and exactly
    ``training_env_steps`` in all: Tianshou runs whole epochs only, so each epoch's length is set
    as it starts, to the next multiple (a run resumed mid-epoch first finishes the rest of that
    epoch) or to the budget, whichever comes first (both multiples of the env steps per collect)."""

    def __init__(self, algorithm, params, training_env_steps: int, **kwargs) -> None:
        super().__init__(algorithm, params, **kwargs)
        self.training_env_steps = training_env_steps
        self.epoch_env_steps = params.epoch_num_steps

    def execute_epoch(self):
        done = trainer_env_step(self)
        end = min((done // self.epoch_env_steps + 1) * self.epoch_env_steps, self.training_env_steps)
        self.params.epoch_num_steps = end - done
        return super().execute_epoch()
