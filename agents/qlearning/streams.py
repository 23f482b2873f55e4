"""The random streams of a Q-learning run that Tianshou and torch draw from globally.

Tianshou draws epsilon-greedy actions from numpy's global generator, noisy-layer noise and
network initialisation from torch's; each gets a stream of its own, derived from ``--seed``
(``runners/base/rng.py``), so seeds share nothing and a checkpoint carries them all.
"""

from __future__ import annotations

from runners.base.rng import GlobalStream


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
