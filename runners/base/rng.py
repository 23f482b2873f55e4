"""Every random stream of a run, each its own and each derived from ``--seed``.

A stream is named by what draws from it (``"network_init"``, ``"envs"``, ``"exploration"``,
``"replay"``, ``"noise"``, ``"interventions"``, ``"diagnostics"``, ...). Its seed is numpy's
``SeedSequence`` of the run's seed with the name's CRC32 as spawn key: seeds 1 and 2 share
no stream, and a stream added later shifts no other (the key is the name, not a position).

Libraries that only draw from numpy's or torch's global generator (Tianshou's epsilon-greedy
and prioritized sampling, ``NoisyLinear.sample``, ``torch.nn.init``) run inside
``GlobalStream.active()``, which swaps the stream's state into the global generator for the
block and takes it back out afterwards, so whatever else draws globally never shifts it.
"""

from __future__ import annotations

import contextlib
import zlib

import numpy as np
import torch


def stream_sequence(seed: int, name: str) -> np.random.SeedSequence:
    """The seed sequence of stream ``name`` of a run seeded with ``seed``."""
    return np.random.SeedSequence(entropy=int(seed), spawn_key=(zlib.crc32(name.encode()),))


def stream_seed(seed: int, name: str, bits: int = 32) -> int:
    """An integer seed (``bits`` <= 63) for the APIs that take one (gymnasium resets, torch.Generator)."""
    word = int(stream_sequence(seed, name).generate_state(1, np.uint64)[0])
    return word & ((1 << bits) - 1)


def numpy_generator(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(stream_sequence(seed, name))


def random_state(seed: int, name: str) -> np.random.RandomState:
    """A legacy ``RandomState`` (what Tianshou's buffers sample from) on stream ``name``."""
    return np.random.RandomState(np.random.MT19937(stream_sequence(seed, name)))


def torch_generator(seed: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, name, bits=63))


class GlobalStream:
    """A stream for code that draws from numpy's and torch's global generators.

    ``with stream.active():`` puts the stream's state into both global generators (torch's
    CUDA generators too, once CUDA is in use) and, on leaving, saves it back and restores
    what was there before. ``state_dict`` / ``load_state_dict`` carry it in checkpoints.
    """

    def __init__(self, seed: int, name: str) -> None:
        self.name = name
        self._torch_seed = stream_seed(seed, name, bits=63)
        numpy_state = random_state(seed, name).get_state()
        with _preserved_global_state():
            torch.manual_seed(self._torch_seed)
            self._torch = torch.get_rng_state()
            self._cuda = _cuda_states()
        self._numpy = numpy_state

    @contextlib.contextmanager
    def active(self):
        outer_numpy, outer_torch, outer_cuda = np.random.get_state(), torch.get_rng_state(), _cuda_states()
        np.random.set_state(self._numpy)
        torch.set_rng_state(self._torch)
        if not self._cuda and _cuda_states():  # CUDA came into use after the stream was made
            torch.cuda.manual_seed_all(self._torch_seed)
            self._cuda = _cuda_states()
        _set_cuda_states(self._cuda)
        try:
            yield
        finally:
            self._numpy, self._torch, self._cuda = np.random.get_state(), torch.get_rng_state(), _cuda_states()
            np.random.set_state(outer_numpy)
            torch.set_rng_state(outer_torch)
            _set_cuda_states(outer_cuda)

    def state_dict(self) -> dict:
        return {"numpy": self._numpy, "torch": self._torch, "cuda": self._cuda}

    def load_state_dict(self, state: dict) -> None:
        self._numpy, self._torch = state["numpy"], state["torch"].cpu()
        # a checkpoint moves between machines: CUDA states only where this one has the devices
        self._cuda = (
            [s.cpu() for s in state.get("cuda") or []][: torch.cuda.device_count()] if torch.cuda.is_available() else []
        )


def _cuda_states() -> list[torch.Tensor]:
    # Only a process that has used CUDA has drawn from its generators; asking otherwise would
    # start a CUDA context (and take GPU memory) in every CPU run on a GPU machine.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.get_rng_state_all()
    return []


def _set_cuda_states(states: list[torch.Tensor]) -> None:
    if states and torch.cuda.is_available() and torch.cuda.is_initialized():
        for device, state in enumerate(states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)


@contextlib.contextmanager
def _preserved_global_state():
    saved_numpy, saved_torch, saved_cuda = np.random.get_state(), torch.get_rng_state(), _cuda_states()
    try:
        yield
    finally:
        np.random.set_state(saved_numpy)
        torch.set_rng_state(saved_torch)
        _set_cuda_states(saved_cuda)
