"""Lyle et al. 2023's classification MDPs (Sec. 3.2, App. A.2) as gymnasium envs
``Classification/Digits-<Variant>-v0``, Variant one of TrueLabel, RandomLabel, SparseReward.

The paper: "We construct a simple MDP analogue of image classification, i.e. the underlying
transition dynamics are defined over a set of ten states and ten actions, and the reward and
transition dynamics depend on whether or not the action taken by the agent is equal to the
index of its corresponding state. We construct three variants of a block MDP whose state space
is the discrete set {0, ..., 9} and whose observation space is given by either the CIFAR-10 or
MNIST dataset." (Sec. 3.2). The variants, quoted:

* **True-label** (``TrueLabel``): "each state s of the MDP produces an observation from that
  class in the underlying classification dataset. Given action a, the reward is the indicator
  function δ_{a=s}. The MDP then randomly transitions to a new state."
* **Random-label** (``RandomLabel``): "follows the same dynamics as the previous environment,
  but each image is assigned a random label in {0...9}, and the observation from an MDP state i
  is sampled from images with (randomized) label i."
* **Sparse-reward** (``SparseReward``): "exhibits the same observation mapping as true-label.
  The reward is equal to δ_{a=s=9}. The MDP transitions to a random state if a ≠ s and otherwise
  to s + 1."

**The image set is ours**: scikit-learn's bundled digits (``sklearn.datasets.load_digits``:
1,797 8 x 8 grey-scale images of the digits 0-9, 174-183 per class, shipped with the package,
no download) stands in for MNIST / CIFAR-10 at a CPU's size. An observation is one image,
flattened to a float32 vector of 64 pixels scaled from 0..16 to [0, 1], so the zoo's networks
give it their vector MLP (agents/qlearning/networks.py). Every image of the set is used (no split).

Where the text leaves a detail open, ours:

* "randomly transitions to a new state", "a random state": uniform over the ten states (a state
  may follow itself), then an image uniformly from that state's images; the first state of an
  episode is drawn the same way.
* Random-label's labels are drawn once, i.i.d. uniform over {0..9} per image, from the env's
  ``label_seed`` (a constructor argument, default 0; ``gym.make(id, label_seed=k)``), not from
  ``reset(seed=...)``: every env of a run (the agents run several in parallel, each reset with a
  seed of its own) is then the same MDP, and the labels stay fixed for the whole run. The paper
  keeps them fixed too: in its MDPs "the changing bootstrap target is the principal source of
  non-stationarity in the true-label and random-label tasks" (Sec. 5.1); re-randomized labels
  belong to its Sec. 4.1 case study, not to these MDPs.
* Sparse-reward at s = 9 with a = 9: "s + 1" is outside {0..9}; we take it modulo 10, so a
  correct label at 9 pays 1 and the chain starts again at state 0.
* Episodes: the MDPs are continuing (nothing terminates). For logging, gymnasium's ``TimeLimit``
  cuts them into episodes of ``EPISODE_STEPS`` = 100 steps as *truncations*, which the zoo's
  agents bootstrap through (agents/qlearning/replay.py), so the values learnt are the continuing MDP's
  at the agent's gamma (true-label's optimum: 1 / (1 - gamma) = 100 at 0.99). A true-label
  episode's return is the accuracy in per cent of its 100 labels; sparse-reward's is at most 10.
  The paper gives neither an episode length nor gamma.

The state is the latent state ``s`` and the shown image's index; every random draw comes from the
env's ``np_random`` (seeded by ``reset(seed=...)``), so envs/state.py captures it exactly.
"""

from __future__ import annotations

from functools import cache

import gymnasium as gym
import numpy as np

NAMESPACE = "Classification"
VARIANTS = {"TrueLabel": "true_label", "RandomLabel": "random_label", "SparseReward": "sparse_reward"}
ENV_IDS = tuple(f"{NAMESPACE}/Digits-{name}-v0" for name in VARIANTS)
CLASSES = 10
EPISODE_STEPS = 100
SPARSE_REWARD_STATE = 9


def register_classification_envs() -> None:
    """Adds the ``Classification/*`` ids to gymnasium's registry (once); the digits load at the first env."""
    for name, variant in VARIANTS.items():
        env_id = f"{NAMESPACE}/Digits-{name}-v0"
        if env_id not in gym.registry:
            gym.register(
                env_id,
                entry_point="envs.classification:ClassificationMDP",
                max_episode_steps=EPISODE_STEPS,
                kwargs={"variant": variant},
            )


@cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: (images (1797, 64) float32 in [0, 1], labels (1797,) int64), read-only."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.data / 16.0).astype(np.float32)
    labels = data.target.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def random_labels(label_seed: int, count: int) -> np.ndarray:
    """Random-label's assignment: one label per image, i.i.d. uniform over {0..9}, from ``label_seed``."""
    return np.random.default_rng(label_seed).integers(0, CLASSES, size=count)


class ClassificationMDP(gym.Env):
    """One of Lyle et al.'s classification MDPs on the digits (module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, variant: str = "true_label", label_seed: int = 0) -> None:
        if variant not in VARIANTS.values():
            raise ValueError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS.values())}")
        self.variant = variant
        self.label_seed = label_seed
        self._images, true_labels = digits()
        labels = random_labels(label_seed, len(true_labels)) if variant == "random_label" else true_labels
        self._labels = labels
        self._images_of = tuple(np.flatnonzero(labels == state) for state in range(CLASSES))
        if any(len(indices) == 0 for indices in self._images_of):
            raise ValueError(f"label_seed {label_seed} leaves a state with no image")
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self._images.shape[1],), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(CLASSES)
        self._state = 0  # the latent state s
        self._index = 0  # the image shown for it

    def _enter(self, state: int) -> np.ndarray:
        """Move to ``state`` and show one of its images, uniformly."""
        indices = self._images_of[state]
        self._state = int(state)
        self._index = int(indices[self.np_random.integers(len(indices))])
        return self._images[self._index].copy()

    def _random_state(self) -> int:
        return int(self.np_random.integers(CLASSES))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self._enter(self._random_state()), {}

    def step(self, action):
        action, state = int(action), self._state
        if self.variant == "sparse_reward":
            reward = float(action == state == SPARSE_REWARD_STATE)
            following = (state + 1) % CLASSES if action == state else self._random_state()
        else:
            reward = float(action == state)
            following = self._random_state()
        return self._enter(following), reward, False, False, {}

    def mdp_state(self) -> dict:
        """What decides the next step besides ``np_random`` (envs/state.py)."""
        return {"state": self._state, "index": self._index}

    def set_mdp_state(self, saved: dict) -> None:
        self._state, self._index = int(saved["state"]), int(saved["index"])
