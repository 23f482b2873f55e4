"""Shared plumbing of the Tianshou-based agents (DQN, Rainbow).

* ``PluginOptimizerFactory``: the optimizer factory Tianshou calls to build the optimizer;
  it attaches the plasticity plug-ins and weight clipping to the online network and
  counts gradient steps.
* ``collection_plan``: env steps per collect and gradient steps per collect that realise
  a replay ratio exactly.
* Fixes for Tianshou 2.0.1, each wrapping the smallest piece:
  - ``NewDataNaNCheck``: its trainer calls ``buffer.hasnull()`` after every collect,
    which scans (and, with frame stacking, rebuilds) the whole buffer, so training slows
    as the buffer fills; the mixin checks only the transitions added since the last call.
  - ``QuietOffPolicyTrainer``: its gradient-update progress bar overrides
    ``show_progress=False`` whenever a collect triggers 20 or more gradient steps.
  - gradient steps per collect are ``round(rr * n)``; ``collection_plan`` picks ``n`` so
    that ``rr * n`` is whole, and refuses ratios that cannot be realised.
  - ``PrioritizedVectorReplayBuffer.set_beta`` sets the sub-buffers' beta, but sampling
    reads the parent's: ``CheckedPrioritizedReplayBuffer`` sets both.
  - frame-once storage rebuilds ``obs_next`` from the next index, which is the current
    one for the newest transition of each env and for truncated ones:
    ``StoredSuccessorsOnly`` never samples the former and keeps the latter's final frame.
  - the trainer runs whole epochs only: ``ExactBudgetTrainer`` shortens the last one.
  - its numba helpers (buffer indices, n-step returns, the sum tree) are compiled anew in
    every process, several seconds of each run's start: ``keep_numba_machine_code`` turns
    numba's on-disk cache on for them (it lives beside Tianshou's own ``.pyc`` files).
  (Its Atari wrapper's crash under numpy >= 2.3 is avoided in ``envs.discrete``.)
* ``RunLogger``: Tianshou's logger interface, writing our tags and checkpoints.
* ``RandomStreams``, ``OwnExplorationStream``, ``seed_replay_buffer``: Tianshou draws
  epsilon-greedy actions and prioritized samples from numpy's global generator, noisy-layer
  noise and network initialisation from torch's, and every uniform replay buffer starts
  from ``RandomState(42)``; each of these gets a stream of its own, derived from ``--seed``
  (``runners.rng``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pandas as pd
import torch
from tianshou.algorithm.optim import OptimizerFactory
from tianshou.data import Batch, PrioritizedVectorReplayBuffer, VectorReplayBuffer
from tianshou.trainer import OffPolicyTrainer
from tianshou.utils.logger.logger_base import BaseLogger

from agents.clipping import WeightClipping
from agents.plugins import PlasticityPlugins
from agents.tianshou_internals import (
    insertion_index,
    sampler,
    set_sampler,
    set_sampling_beta,
    stored_batch,
    stored_indices,
    stores_obs_next,
    sub_buffer_offsets,
    trainer_env_step,
)
from envs.discrete import drain_finished_episodes
from runners.errors import UsageError
from runners.rng import GlobalStream, random_state
from runners.rundir import duration


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


keep_numba_machine_code()

MAX_STEPS_PER_COLLECT = 1000
MAX_REPLAY_RATIO = 128  # beyond the highest ratios studied; a larger one is almost surely a typo


# ---------------------------------------------------------------- replay ratio
def collection_plan(replay_ratio: float, num_envs: int) -> tuple[int, int]:
    """(env steps per collect, gradient steps per collect) with ratio exactly ``replay_ratio``.

    Collects are whole rounds over the ``num_envs`` envs, so the step count is the
    smallest multiple of ``num_envs`` whose product with the ratio is whole.
    """
    if not 0 < replay_ratio <= MAX_REPLAY_RATIO:
        raise UsageError(
            f"--replay-ratio must be > 0 and at most {MAX_REPLAY_RATIO} gradient steps per env step, got {replay_ratio}"
        )
    ratio = Fraction(str(replay_ratio))
    steps = np.lcm(num_envs, ratio.denominator)
    if steps > MAX_STEPS_PER_COLLECT:
        raise UsageError(
            f"--replay-ratio {replay_ratio} cannot be realised with whole gradient steps unless each collect takes "
            f"{steps} env steps (with {num_envs} envs); use a ratio with a small denominator, e.g. 0.25, 0.5, 1, 2, 4, 8"
        )
    return int(steps), int(ratio * steps)


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


# ---------------------------------------------------------------- Tianshou 2.0.1 fixes
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
        self._truncation_next_obs: dict[int, np.ndarray] = {}  # buffer index -> next observation

    def add(self, batch, buffer_ids=None):
        if stores_obs_next(self):
            return super().add(batch, buffer_ids=buffer_ids)
        truncated = np.asarray(batch.truncated, bool) & ~np.asarray(batch.terminated, bool)
        next_obs = np.array(batch.obs_next[truncated])
        result = super().add(batch, buffer_ids=buffer_ids)
        written = np.asarray(result[0])
        for index in written:
            self._truncation_next_obs.pop(int(index), None)
        for index, obs in zip(written[truncated], next_obs):
            self._truncation_next_obs[int(index)] = obs
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
            next_obs = self._truncation_next_obs.get(int(buffer_index))
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


class RandomStreams:
    """The streams of a Q-learning run that Tianshou and torch draw from globally: network
    initialisation (and the fresh networks of resets and probes), epsilon-greedy exploration,
    noisy-layer noise (acting and learning). ``state_dict`` carries them in checkpoints."""

    NAMES = ("network_init", "exploration", "noise")

    def __init__(self, seed: int) -> None:
        self.network_init, self.exploration, self.noise = (GlobalStream(seed, name) for name in self.NAMES)

    def state_dict(self) -> dict:
        return {name: getattr(self, name).state_dict() for name in self.NAMES}

    def load_state_dict(self, state: dict) -> None:
        for name in self.NAMES:
            getattr(self, name).load_state_dict(state[name])


class OwnExplorationStream:
    """Policy mixin: Tianshou's epsilon-greedy ``add_exploration_noise`` draws from numpy's
    global generator; here it draws from the run's exploration stream."""

    def __init__(self, *args, exploration_stream: GlobalStream, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.exploration_stream = exploration_stream

    def add_exploration_noise(self, act, batch):
        with self.exploration_stream.active():
            return super().add_exploration_noise(act, batch)


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


# ---------------------------------------------------------------- logging and checkpoints
class RunLogger(BaseLogger):
    """Tianshou's logger interface, writing the zoo's tags.

    After every collect: finished games as ``charts/episodic_return`` / ``_length`` (agent
    steps) / ``_frames`` (Atari's emulator frames); every
    ``interval`` env steps: ``losses/td_loss`` (mean since the last write), env steps/s,
    gradient steps/s and the realised replay ratio. ``save_data`` (end of every trainer
    epoch) calls the trainer's ``save_checkpoint_fn``, as Tianshou's loggers do, at every epoch
    (the function decides whether one is due); ``restore_data`` tells the trainer where it left off.
    """

    def __init__(
        self,
        writer,
        envs,
        optimizer_factory: PluginOptimizerFactory,
        interval: int,
        warmup_steps: int,
        restored: tuple[int, int, int] | None,
        total_steps: int,
        report_progress: Callable[[int, float, float], None] = lambda step, rate, eta: None,
    ) -> None:
        super().__init__(training_interval=1, update_interval=1, info_interval=1)
        self.writer, self.envs, self.factory = writer, envs, optimizer_factory
        self.interval, self.warmup_steps = interval, warmup_steps
        self.restored = restored
        self.total_steps, self.report_progress = total_steps, report_progress
        self.budget_estimated = False
        self.losses: list[float] = []
        self.next_write = interval
        self.clock = None  # (time, env step, gradient steps) at the previous write
        self.recent_returns: list[float] = []
        if restored:  # the next write is the one the uninterrupted run would make
            self.next_write = (restored[1] // interval + 1) * interval

    def state_dict(self) -> dict:
        return {"losses": list(self.losses), "recent_returns": self.recent_returns[-20:], "next_write": self.next_write}

    def load_state_dict(self, state: dict | None) -> None:
        if state:  # absent in checkpoints of older versions
            self.losses, self.recent_returns, self.next_write = (
                list(state["losses"]),
                list(state["recent_returns"]),
                state["next_write"],
            )

    def global_step(self, trainer_env_step: int) -> int:
        """Env steps including the random warm-up before training, the x-axis of every tag."""
        return self.warmup_steps + trainer_env_step

    def log_training_data(self, log_data: dict, step: int) -> None:
        global_step = self.global_step(step)
        for episodic_return, episodic_length, episodic_frames in drain_finished_episodes(self.envs):
            self.writer.add_scalar("charts/episodic_return", episodic_return, global_step)
            self.writer.add_scalar("charts/episodic_length", episodic_length, global_step)  # agent steps
            if episodic_frames != episodic_length:  # Atari: emulator frames (frame skip, reset no-ops)
                self.writer.add_scalar("charts/episodic_frames", episodic_frames, global_step)
            self.recent_returns.append(episodic_return)
        now = (time.perf_counter(), step, self.factory.gradient_steps)
        if self.clock is None:
            self.clock = now
        if step >= self.next_write:
            self.write_rates(now)
            self.next_write = (step // self.interval + 1) * self.interval

    def write_rates(self, now: tuple[float, int, int]) -> None:
        seconds, step, gradient_steps = now
        global_step = self.global_step(step)
        elapsed = max(seconds - self.clock[0], 1e-9)
        if self.losses:
            self.writer.add_scalar("losses/td_loss", float(np.mean(self.losses)), global_step)
            self.losses.clear()
        self.writer.add_scalar("charts/SPS", (step - self.clock[1]) / elapsed, global_step)
        self.writer.add_scalar(
            "charts/gradient_steps_per_second", (gradient_steps - self.clock[2]) / elapsed, global_step
        )
        if step > 0:
            self.writer.add_scalar("charts/replay_ratio", gradient_steps / step, global_step)
        mean_return = f"{np.mean(self.recent_returns[-20:]):8.1f}" if self.recent_returns else "       -"
        rate = (step - self.clock[1]) / elapsed
        eta = (self.total_steps - global_step) / max(rate, 1e-9)
        print(
            f"step {global_step:>9,}/{self.total_steps:,}  episodic return (last 20) {mean_return}  replay ratio "
            f"{gradient_steps / max(step, 1):.3f}  env steps/s {rate:6.0f}  ETA {duration(eta)}",
            flush=True,
        )
        if not self.budget_estimated and step > self.clock[1]:  # the first rate measured
            print(
                f"at {rate:,.0f} env steps/s the whole budget of {self.total_steps:,} env steps takes "
                f"~{duration(self.total_steps / max(rate, 1e-9))}",
                flush=True,
            )
            self.budget_estimated = True
        self.report_progress(global_step, rate, eta)
        self.clock = now

    def log_update_data(self, log_data: dict, step: int) -> None:
        loss = log_data.get("loss")
        if loss is not None:
            self.losses.append(float(loss))

    def log_info_data(self, log_data: dict, step: int) -> None:
        pass

    def log_test_data(self, log_data: dict, step: int) -> None:
        pass

    def save_data(self, epoch: int, env_step: int, update_step: int, save_checkpoint_fn=None) -> None:
        if save_checkpoint_fn is not None:
            save_checkpoint_fn(epoch, env_step, update_step)

    def restore_data(self) -> tuple[int, int, int]:
        return self.restored or (0, 0, 0)

    def write(self, step_type, step, data) -> None:
        pass

    def prepare_dict_for_logging(self, log_data: dict) -> dict:
        return log_data

    def finalize(self) -> None:
        self.writer.flush()

    @staticmethod
    def restore_logged_data(log_path: str) -> dict:
        return {}
