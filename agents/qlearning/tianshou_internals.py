"""Every private attribute of Tianshou 2.0.x the zoo reads or writes, each behind one function.

Tianshou offers no public way to do what these do (seed a buffer's sampler, continue the
target-sync count after a resume, save what the collector will act on next, ...). Each
function names the attribute it reaches and why the zoo needs it, and
``tests/test_tianshou_internals.py`` builds the real objects and fails when a release moves,
renames or changes the meaning of any of them. The private *methods* the zoo's subclasses
override (its extension points into Tianshou's classes) are listed in ``OVERRIDDEN``, checked
by the same test.
"""

from __future__ import annotations

import numpy as np
import torch

# (class, method) pairs that the zoo's subclasses override (agents/qlearning/: replay.py, trainer.py,
# streams.py, logger.py, lean_update.py; agents/dqn.py, agents/rainbow.py)
OVERRIDDEN = (
    ("tianshou.algorithm.modelfree.dqn.QLearningOffPolicyAlgorithm", "_periodically_update_lagged_network_weights"),
    ("tianshou.algorithm.modelfree.dqn.QLearningOffPolicyAlgorithm", "_preprocess_batch"),
    ("tianshou.algorithm.modelfree.rainbow.RainbowDQN", "_sample_noise"),
    ("tianshou.trainer.OffPolicyTrainer", "_sample_and_update"),
    ("tianshou.trainer.Trainer", "_pbar"),
)


# ---------------------------------------------------------------- replay buffers
def sampler(buffer) -> np.random.RandomState:
    """``ReplayBuffer._random_state``: what uniform sampling draws from (``RandomState(42)`` unless set)."""
    return buffer._random_state


def set_sampler(buffer, generator: np.random.RandomState) -> None:
    buffer._random_state = generator


def insertion_index(buffer) -> int:
    """``ReplayBuffer._insertion_idx``: where the next transition goes (the oldest one, once full)."""
    return buffer._insertion_idx


def stores_obs_next(buffer) -> bool:
    """``ReplayBuffer._save_obs_next``: False under frame-once storage (``ignore_obs_next``)."""
    return buffer._save_obs_next


def stored_indices(buffer) -> np.ndarray:
    """``ReplayBuffer._indices``: the buffer's index range, which ``__getitem__`` slices."""
    return buffer._indices


def stored_batch(buffer):
    """``ReplayBuffer._meta``: the Batch holding every stored field."""
    return buffer._meta


def sub_buffer_offsets(buffer) -> np.ndarray:
    """``ReplayBufferManager._offset``: where each sub-buffer starts in the vector buffer's indices."""
    return buffer._offset


def normalises_weights(buffer) -> bool:
    """``PrioritizedReplayBuffer._weight_norm``: importance weights divided by their maximum."""
    return buffer._weight_norm


def set_sampling_beta(buffer, beta: float) -> None:
    """``PrioritizedReplayBuffer._beta``, the exponent that the vector buffer's own sampling reads;
    its ``set_beta`` reaches the sub-buffers only."""
    buffer._beta = beta


# ---------------------------------------------------------------- algorithm, optimizer, trainer
def target_sync_counter(algorithm) -> int:
    """``QLearningOffPolicyAlgorithm._iter``: updates so far; the target syncs when it is a multiple
    of ``target_update_freq``. A checkpoint keeps it, so a resume syncs when the run would have."""
    return algorithm._iter


def set_target_sync_counter(algorithm, count: int) -> None:
    algorithm._iter = count


def torch_optimizer(optim) -> torch.optim.Optimizer:
    """``OptimizerFactory``'s wrapper ``_optim``: the torch optimizer that the plug-ins attach to."""
    return optim._optim


def update_step(trainer) -> int:
    """``Trainer._current_update_step``: update steps so far, each a collect and its gradient steps
    (a mid-epoch checkpoint stores where the trainer resumes counting)."""
    return trainer._current_update_step


def trainer_env_step(trainer) -> int:
    """``Trainer._env_step``: env steps collected by the trainer (the warm-up not included)."""
    return trainer._env_step


def trainer_logger(trainer):
    """``Trainer._logger``: the logger the trainer writes update data to."""
    return trainer._logger


# ---------------------------------------------------------------- collector
def pending_step(collector) -> dict:
    """What the collector acts on at its next collect: the last observations, infos and hidden
    states of its envs (``Collector._pre_collect_*``); a checkpoint keeps them for an exact resume."""
    return {
        "last_obs": collector._pre_collect_obs_RO,
        "last_info": collector._pre_collect_info_R,
        "last_hidden_state": collector._pre_collect_hidden_state_RH,
    }


def restore_pending_step(collector, state: dict) -> None:
    collector._pre_collect_obs_RO, collector._pre_collect_info_R = state["last_obs"], state["last_info"]
    collector._pre_collect_hidden_state_RH = state["last_hidden_state"]
