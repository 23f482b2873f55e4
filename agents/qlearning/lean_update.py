"""A lean gradient step for Tianshou's DQN and Rainbow: the same numbers, less Python per update.

At high replay ratios on a CPU, a small network's update costs less than the bookkeeping
around it. Tianshou 2.0.1's ``Algorithm.update`` builds several ``Batch`` objects per step
(the sampled batch with every buffer key, another full batch to read ``obs_next``, the
policy's output batches), runs ``compute_nstep_return`` (a copy of the buffer's ``done``
array and ``unfinished_index()`` for every step, even at n = 1), switches every module to
train mode and back (twice per update, each a walk over all modules), walks the target
network into eval mode on every forward, and computes argmax actions on the host.

``LeanUpdateMixin`` gives Tianshou's ``DQN`` and ``RainbowDQN`` (``agents.dqn.LeanDQN``,
``agents.rainbow.LeanRainbowDQN``) a new ``update``: the same sampling call (so the replay buffer's random stream is the
same), the same target-network schedule, noise sampling, optimizer wrapper and priority
updates, computed from the sampled indices directly:

* only the keys the loss needs are read from the buffer (obs, act, the n-step rewards and
  flags, the bootstrap observation);
* the n-step return is Tianshou's formula over the ``n x batch`` indices only (for n = 1:
  ``r + gamma (1 - terminated') Q'``), combined with the bootstrap values on their device;
* train mode is set only when some module is not already in it (Tianshou's update leaves
  them all in train mode, so this is once per run in practice);
* greedy next actions stay on the device.

``LeanOffPolicyTrainer`` hands each update's loss to the logger directly instead of through
Tianshou's per-update moving averages and ``dataclasses.asdict`` (only our logger reads it).
The loss and target of each agent are written once, in its own file, and both its lean update and
its diagnostics (``td_batch``) call them. ``tests/test_lean_update.py``
checks that losses and parameters after N updates match the stock path on the same batches
(DQN, double DQN, n-step, Rainbow with prioritized replay).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tianshou.utils.lagged_network import EvalModeModuleWrapper
from tianshou.utils.torch_utils import torch_train_mode

from agents.qlearning.tianshou_internals import (
    normalises_weights,
    stores_obs_next,
    torch_optimizer,
    trainer_logger,
    update_step,
)
from agents.qlearning.trainer import ExactBudgetTrainer


@dataclass
class Transitions:
    """What one update reads from the replay buffer (numpy arrays, as the buffer holds them)."""

    indices: np.ndarray
    obs: np.ndarray
    act: torch.Tensor
    obs_next: np.ndarray  # the observation the bootstrap value is computed on (see read_transitions)
    rewards: np.ndarray  # (n, batch) rewards along the n-step path
    ends: np.ndarray | None  # (n, batch) episode ends along the path (None for n = 1: not needed)
    bootstrap_mask: np.ndarray  # (batch,) the bootstrap state is not terminal
    weight: torch.Tensor | float  # importance weights of prioritized replay, 1.0 otherwise


def next_observations(buffer, indices: np.ndarray) -> np.ndarray:
    """``buffer[indices].obs_next`` without building the whole batch: ReplayBuffer.__getitem__'s
    rule, and the kept final observations of truncated episodes under frame-once storage
    (``agents.qlearning.replay.StoredSuccessorsOnly``)."""
    if stores_obs_next(buffer):
        return buffer.get(indices, "obs_next")
    obs_next = buffer.get(buffer.next(indices), "obs")
    kept = getattr(buffer, "truncation_next_obs", None)
    if kept:
        for position in np.flatnonzero(np.isin(indices, list(kept))):
            obs_next[position] = kept[int(indices[position])]
    return obs_next


def nstep_paths(buffer, indices: np.ndarray, n_step: int) -> np.ndarray:
    """(n, batch) buffer indices of the n-step paths from ``indices``; ``buffer.next`` stays put
    at an episode's end and at an env's newest transition, so the last row is where each
    path's return bootstraps."""
    path = [indices]
    for _ in range(n_step - 1):
        path.append(buffer.next(path[-1]))
    return np.stack(path)


def read_transitions(
    buffer, indices: np.ndarray, n_step: int, device: torch.device, bootstrap_after_n_steps: bool = True
) -> Transitions:
    """The n-step paths starting at ``indices`` (Tianshou's ``compute_nstep_return`` walk).

    ``obs_next`` is the next observation of the path's last transition, where the n-step
    return bootstraps. ``bootstrap_after_n_steps=False`` gives the first transition's next
    observation instead, which is what Tianshou 2.0.1's stock C51 reads (see
    ``agents.rainbow.NStepBootstrapRainbowDQN``, which corrects it on the stock path).
    """
    path = nstep_paths(buffer, indices, n_step)
    last = path[-1]
    ends = None
    if n_step > 1:  # an episode end (or the newest transition of an env) stops the return early
        ends = buffer.done[path]
        unfinished = buffer.unfinished_index()
        if len(unfinished):
            ends |= np.isin(path, unfinished)
    weight: torch.Tensor | float = 1.0
    if hasattr(buffer, "get_weight"):  # prioritized replay: normalised importance weights, as its __getitem__
        weight = buffer.get_weight(indices)
        if normalises_weights(buffer):
            weight = weight / np.max(weight)
        weight = torch.as_tensor(weight, dtype=torch.float32, device=device)
    return Transitions(
        indices=indices,
        obs=buffer.get(indices, "obs"),
        act=torch.as_tensor(buffer.act[indices], device=device).long(),
        obs_next=next_observations(buffer, last if bootstrap_after_n_steps else indices),
        rewards=buffer.rew[path],
        ends=ends,
        bootstrap_mask=~buffer.terminated[last],
        weight=weight,
    )


def nstep_returns(batch: Transitions, bootstrap: torch.Tensor, gamma: float) -> torch.Tensor:
    """``sum_k gamma^k r_{t+k} + gamma^m (1 - terminated) bootstrap``, ``m`` the steps to the
    path's end; ``bootstrap`` is (batch, A): Q-values, or C51's atoms."""
    if batch.ends is None:
        discounted, scale = batch.rewards[0].astype(np.float64), gamma * batch.bootstrap_mask
    else:
        n_step, size = batch.rewards.shape
        discounted, steps = np.zeros(size), np.full(size, n_step)
        for k in range(n_step - 1, -1, -1):  # backwards, as Tianshou's _nstep_return
            steps[batch.ends[k]] = k + 1
            discounted[batch.ends[k]] = 0.0
            discounted = batch.rewards[k] + gamma * discounted
        scale = gamma**steps * batch.bootstrap_mask
    as_tensor = lambda array: torch.as_tensor(array, dtype=torch.float32, device=bootstrap.device)  # noqa: E731
    return as_tensor(discounted)[:, None] + bootstrap * as_tensor(scale)[:, None]


def evaluation_module(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside Tianshou's eval-mode wrapper of a target network, in eval mode."""
    if isinstance(network, EvalModeModuleWrapper):
        network = network.module
        if network.training:
            network.eval()
    return network


class LeanUpdateMixin:
    """``update`` for Tianshou Q-learning algorithms; subclasses supply ``_lean_step``."""

    _train_state: list[tuple[torch.nn.Module, bool]] | None = None
    _bootstrap_after_n_steps = True

    def _in_train_state(self) -> bool:
        """Whether every module is in the mode Tianshou's ``torch_train_mode(self)`` would set."""
        if self._train_state is None:
            self.train(True)
            self._train_state = [(module, module.training) for module in self.modules()]
        return all(module.training is mode for module, mode in self._train_state)

    def update(self, buffer, sample_size: int | None):
        if not self.policy.is_within_training_step:
            raise RuntimeError(
                "update() was called outside of a training step (see tianshou's policy_within_training_step)"
            )
        if buffer is None or not sample_size:  # whole-buffer updates are Tianshou's own business
            return super().update(buffer, sample_size)
        start = time.time()
        indices = buffer.sample_indices(sample_size)
        device = torch_optimizer(self.optim).param_groups[0]["params"][0].device  # not parameters(): a module walk
        batch = read_transitions(buffer, indices, self.n_step, device, self._bootstrap_after_n_steps)
        if self.training and self._in_train_state():
            stats, priorities = self._lean_step(batch)
        else:
            with torch_train_mode(self):
                stats, priorities = self._lean_step(batch)
        if hasattr(buffer, "update_weight"):
            buffer.update_weight(indices, priorities)
        for scheduler in self.lr_schedulers:
            scheduler.step()
        stats.train_time = time.time() - start
        return stats


class LeanOffPolicyTrainer(ExactBudgetTrainer):
    """The trainer passing each update's loss straight to the logger (no moving averages)."""

    def _sample_and_update(self, buffer):
        stats = self.algorithm.update(sample_size=self.params.batch_size, buffer=buffer)
        trainer_logger(self).log_update_data({"loss": stats.loss}, update_step(self))
        return stats
