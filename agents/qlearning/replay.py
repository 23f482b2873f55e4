"""Replay buffers for the Q-learning agents: Tianshou 2.0.1's, with its sampling on the run's
own streams and three of its faults mended, each wrapping the smallest piece.

* ``NewDataNaNCheck``: the trainer calls ``buffer.hasnull()`` after every collect, which scans
  (and, with frame stacking, rebuilds) the whole buffer, so training slows as the buffer fills;
  the mixin checks only the transitions added since the last call.
* ``StoredSuccessorsOnly``: frame-once storage rebuilds ``obs_next`` from the next index, which
  is the current one for the newest transition of each env and for truncated ones; the mixin
  never samples the former and keeps the latter's final frame.
* ``CheckedPrioritizedReplayBuffer``: ``PrioritizedVectorReplayBuffer.set_beta`` sets the
  sub-buffers' beta, but sampling reads the parent's; this one sets both, and draws its
  prioritized samples from a stream of its own (Tianshou draws them from numpy's global generator).
* ``seed_replay_buffer``: every uniform buffer starts from ``RandomState(42)`` in Tianshou; each
  gets a stream of its own, derived from ``--seed`` (``runners/base/rng.py``).
* ``keep_numba_machine_code``: Tianshou's numba helpers (buffer indices, n-step returns, the sum
  tree) are compiled anew in every process, several seconds of each run's start; this turns
  numba's on-disk cache on for them (it lives beside Tianshou's own ``.pyc`` files).
* ``ReplayObservations``: ReDo's inputs, replay observations drawn on a stream of their own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from tianshou.data import Batch, PrioritizedVectorReplayBuffer, VectorReplayBuffer

from agents.qlearning.tianshou_internals import (
    insertion_index,
    sampler,
    set_sampler,
    set_sampling_beta,
    stored_batch,
    stored_indices,
    stores_obs_next,
    sub_buffer_offsets,
)
from runners.base.rng import random_state


def keep_numba_machine_code() -> None:
    from tianshou.algorithm import algorithm_base
    from tianshou.data.buffer import manager
    from tianshou.data.utils import segtree

    for module in (algorithm_base, manager, segtree):
        for helper in vars(module).values():
            if (
                callable(getattr(helper, "enable_caching", None))
                and getattr(helper, "__module__", None) == module.__name__
            ):
                helper.enable_caching()


# At import, not in a run's set-up: the cache must be on before a helper's first compile, and every
# Q-learning run, benchmark and test that builds a buffer imports this module first.
keep_numba_machine_code()


# ---------------------------------------------------------------- Tianshou 2.0.1's buffers, mended
class NewDataNaNCheck:
    """Buffer mixin: ``hasnull()`` looks only at transitions added since the previous call."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._unchecked: list[np.ndarray] = []  # indices written by add() since the last hasnull()

    def add(self, batch, buffer_ids=None):
        result = super().add(batch, buffer_ids=buffer_ids)
        self._unchecked.append(np.asarray(result[0]))
        return result

    def hasnull(self) -> bool:
        if not self._unchecked:
            return False
        indices = np.unique(np.concatenate(self._unchecked))
        self._unchecked.clear()
        return _any_null(stored_batch(self), indices)


def _any_null(batch: Batch, indices: np.ndarray) -> bool:
    """``batch[indices].hasnull()`` without building that batch; bool and integer arrays cannot hold nulls."""
    for value in batch.values():
        if isinstance(value, Batch):
            if _any_null(value, indices):
                return True
        elif not (isinstance(value, np.ndarray) and value.dtype.kind in "biu") and pd.isnull(value[indices]).any():
            return True
    return False


class StoredSuccessorsOnly:
    """Buffer mixin for frame-once storage (``ignore_obs_next``), where Tianshou rebuilds
    ``obs_next`` of index i from the frames at ``next(i)``, and ``next(i) == i`` both for
    the newest transition of each env and at an episode's end. Two kinds of samples would
    bootstrap from the current state instead of the next one:

    * a transition whose n-step bootstrap transition is the newest of its env, unfinished
      (the state it needs is not stored yet): never sampled; a draw that hits one is
      redrawn, which keeps the uniform or prioritized proportions over the others;
    * the few oldest transitions of a full buffer, whose frame stacks reach overwritten frames;
    * a truncated transition (done, not terminated; bootstrapped by Tianshou's targets):
      its true next observation is kept aside when added (truncations are rare) and put
      into ``obs_next``.

    With ``obs_next`` stored, Tianshou's own truncation of the n-step return at the
    newest transition is correct and nothing changes.
    """

    def __init__(self, *args, n_step: int = 1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.n_step = n_step
        self.truncation_next_obs: dict[int, np.ndarray] = {}  # buffer index -> next observation

    def add(self, batch, buffer_ids=None):
        if stores_obs_next(self):
            return super().add(batch, buffer_ids=buffer_ids)
        truncated = np.asarray(batch.truncated, bool) & ~np.asarray(batch.terminated, bool)
        next_obs = np.array(batch.obs_next[truncated])
        result = super().add(batch, buffer_ids=buffer_ids)
        written = np.asarray(result[0])
        for index in written:
            self.truncation_next_obs.pop(int(index), None)
        for index, obs in zip(written[truncated], next_obs):
            self.truncation_next_obs[int(index)] = obs
        return result

    def successor_not_stored(self, indices: np.ndarray) -> np.ndarray:
        """True where the n-step target of ``indices`` needs a state the buffer does not hold
        yet, or where the frame stack reaches past the oldest stored frame of a full buffer."""
        bootstrap = indices
        for _ in range(self.n_step - 1):
            bootstrap = self.next(bootstrap)
        return np.isin(bootstrap, self.unfinished_index()) | np.isin(indices, self.incomplete_stacks())

    def incomplete_stacks(self) -> np.ndarray:
        """The ``stack_num - 1`` oldest transitions of each full sub-buffer: the frames before
        them are overwritten, so their stacks (and their predecessors' ``obs_next``) would
        repeat the oldest frame instead."""
        oldest = [
            offset + (insertion_index(buffer) + np.arange(self.stack_num - 1)) % buffer.maxsize
            for offset, buffer in zip(sub_buffer_offsets(self), getattr(self, "buffers", [self]))
            if len(buffer) == buffer.maxsize
        ]
        return np.concatenate(oldest) if oldest else np.array([], int)

    def sample_indices(self, batch_size: int | None) -> np.ndarray:
        indices = super().sample_indices(batch_size)
        if stores_obs_next(self) or batch_size is None or batch_size <= 0:
            return indices
        for _ in range(1000):
            redraw = self.successor_not_stored(indices)
            if not redraw.any():
                return indices
            indices[redraw] = super().sample_indices(int(redraw.sum()))
        raise RuntimeError("the replay buffer holds no transition whose successor is stored")

    def __getitem__(self, index):
        if stores_obs_next(self):
            return super().__getitem__(index)
        if isinstance(index, slice):  # as Tianshou resolves slices
            index = self.sample_indices(0) if index == slice(None) else stored_indices(self)[: len(self)][index]
        if np.ndim(index) == 0:
            return self[np.array([index])][0]
        batch = super().__getitem__(index)
        for position, buffer_index in enumerate(np.asarray(index)):
            next_obs = self.truncation_next_obs.get(int(buffer_index))
            if next_obs is not None:
                batch.obs_next[position] = next_obs
        return batch


class PrioritizedSamplesOnOwnStream:
    """Prioritized buffer mixin: Tianshou's ``PrioritizedReplayBuffer.sample_indices`` draws its
    uniform numbers from numpy's global generator; these come from the buffer's own
    ``_random_state``, as uniform replay's do."""

    def sample_indices(self, batch_size: int | None) -> np.ndarray:
        if batch_size is not None and batch_size > 0 and len(self) > 0:
            scalar = sampler(self).rand(batch_size) * self.weight.reduce()
            return self.weight.get_prefix_sum_idx(scalar)
        return super().sample_indices(batch_size)


class CheckedReplayBuffer(StoredSuccessorsOnly, NewDataNaNCheck, VectorReplayBuffer):
    pass


class CheckedPrioritizedReplayBuffer(
    StoredSuccessorsOnly, PrioritizedSamplesOnOwnStream, NewDataNaNCheck, PrioritizedVectorReplayBuffer
):
    def set_beta(self, beta: float) -> None:
        super().set_beta(beta)  # Tianshou's: the sub-buffers only
        set_sampling_beta(self, beta)  # the one sampling reads


def make_replay_buffer(
    size: int, num_envs: int, frame_stack: int, prioritized: dict | None = None, n_step: int = 1, seed: int = 0
):
    """A vector replay buffer sampling from streams of its own derived from ``seed``; with
    ``frame_stack > 1`` it stores each frame once and rebuilds the stacks when sampling
    (Tianshou's ``save_only_last_obs``); ``n_step`` is the return horizon of the learner's targets."""
    options = dict(total_size=size, buffer_num=num_envs, n_step=n_step)
    if frame_stack > 1:
        options.update(stack_num=frame_stack, ignore_obs_next=True, save_only_last_obs=True)
    if prioritized is not None:
        buffer = CheckedPrioritizedReplayBuffer(**options, **prioritized)
    else:
        buffer = CheckedReplayBuffer(**options)
    seed_replay_buffer(buffer, seed)
    return buffer


def seed_replay_buffer(buffer, seed: int) -> None:
    """Every generator a vector buffer samples from (its own, which picks the sub-buffers, and
    each sub-buffer's), on streams of ``seed``: Tianshou starts each from ``RandomState(42)``."""
    set_sampler(buffer, random_state(seed, "replay"))
    for index, sub_buffer in enumerate(getattr(buffer, "buffers", [])):
        set_sampler(sub_buffer, random_state(seed, f"replay/{index}"))


class ReplayObservations:
    """ReDo's inputs for DQN/Rainbow: ``samples`` observations drawn from the replay buffer (``buffer()``,
    looked up at each call) by its own ``sample_indices``, with every generator the buffer samples from
    swapped for a RandomState of its own (stream ``"redo"``) for the call: training's replay draws are
    not shifted (a prioritized buffer draws by priority, as for training). The stream's state is in
    ``state_dict()``."""

    def __init__(
        self, buffer: Callable[[], object], samples: int, seed: int, device: torch.device | str = "cpu"
    ) -> None:
        self.buffer, self.samples, self.device = buffer, int(samples), device
        self.generator = random_state(seed, "redo")

    def __call__(self) -> torch.Tensor:
        buffer = self.buffer()
        holders = [buffer, *getattr(buffer, "buffers", [])]
        saved = [sampler(holder) for holder in holders]
        for holder in holders:
            set_sampler(holder, self.generator)
        try:
            indices = buffer.sample_indices(self.samples)
        finally:
            for holder, generator in zip(holders, saved):
                set_sampler(holder, generator)
        return torch.as_tensor(np.asarray(buffer.get(indices, "obs")), device=self.device)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
