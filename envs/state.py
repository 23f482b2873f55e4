"""The complete state of one gymnasium env and its wrapper stack, to checkpoint and resume
an episode in flight bitwise exactly.

    state = capture_env_state(env)       # a dict of copies: torch.save / pickle it
    restore_env_state(fresh_env, state)  # a fresh env of the same id and wrapper stack

Pickling a whole env does not do it: MuJoCo and ALE envs pickle as their constructor
arguments (EzPickle) and come back as new, unreset simulators. So the state is taken in
two parts.

Wrappers: each wrapper's instance attributes, deep-copied (one copy for the whole stack, so
objects shared between wrappers stay shared), except ``env``, its spaces, metadata, spec and
constructor arguments, and callables. That generic rule is what keeps up with gymnasium:
every wrapper of ours keeps its state in plain attributes (``_elapsed_steps`` of TimeLimit,
``_has_reset`` of OrderEnforcing, the counters and queues of RecordEpisodeStatistics,
``obs_rms`` of NormalizeObservation, ``return_rms`` and ``discounted_reward`` of
NormalizeReward, AtariPreprocessing's ``obs_buffer``/``lives``/``game_over``,
EpisodicLifeEnv's ``lives``/``was_real_done``, FrameStackObservation's ``obs_queue``,
EpisodeTap's ``agent_steps``/``finished``), and what it leaves out is configuration or code:
the lambdas of TransformObservation/TransformReward, ClipAction's function, the spaces (the
envs step without sampling them). RecordEpisodeStatistics' ``episode_start_time`` is wall
clock and comes back as it was: episode times (``info["episode"]["t"]``) are not exact.

Base env, per family, because each keeps its state in its own way:

* MuJoCo (``gymnasium.envs.mujoco``): the whole ``MjData``, pickled and put back with
  ``mj_copyData``, and the env's ``np_random`` (reset noise). The integration state alone
  (``mj_getState(mjSTATE_INTEGRATION)``) continues Hopper, Walker2d and HalfCheetah
  exactly, but Ant and Humanoid read positions computed during the previous step
  (``xpos``, ``xipos``) before stepping, so their first reward after a restore differs;
  the full ``MjData`` carries those. Pickled, it is mostly unused arena: zlib (level 1)
  makes Hopper's 680 KB 32 KB in 2 ms. The ``MjModel`` is not saved: v5 envs never change it.
* ALE (``ale_py``): ``ale.cloneState(include_rng=True)`` (emulator, frame counters, lives,
  the sticky-action RNG) and the env's ``np_random`` (AtariPreprocessing's no-op draws).
* MinAtar (``minatar.gym``): a deep copy of the game object, its ``RandomState`` included
  (MinAtar is plain Python and numpy), and ``np_random``.
* gymnasium's classic control (CartPole, Acrobot, ...): the same generic rule as the
  wrappers (``state``, ``steps_beyond_terminated``, ``_np_random``, ...), less rendering objects.
* The classification MDPs (``envs.classification``): the latent state and the shown image's
  index (``mdp_state()``), and ``np_random``; not the image set, which is configuration.
* Box2D's LunarLander (``gymnasium.envs.box2d.lunar_lander``): the physics world is a SWIG
  object that neither copies nor pickles, and its solver keeps contact caches no setter
  reaches, so the episode is replayed instead. LunarLander builds a new world at every reset,
  so its state is its episode: ``EpisodeReplay`` (``replayable`` puts it around the env in the
  factories) keeps how the episode began (the reset's seed and options, or the ``np_random``
  it drew from) and every action since; a restore resets the fresh env's base the same way
  and steps it through those actions (the simulation is deterministic), at most one episode's
  steps. BipedalWalker keeps one world across episodes, whose history a replay of the last
  episode does not rebuild (tested: it drifts within steps), so it is refused like any env not
  listed here.

Any other base env is refused with a ``TypeError`` naming it, rather than half-captured.
"""

from __future__ import annotations

import copy
import pickle
import zlib
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from runners.base.errors import UsageError

STATE_VERSION = 1

# Attributes that are configuration or plumbing, not state: the wrapped env, spaces and
# metadata (derived at construction), the constructor arguments kept for re-creation,
# and rendering objects of classic control (pygame surfaces cannot be copied).
_NOT_STATE = {
    "env",
    "_action_space",
    "_observation_space",
    "action_space",
    "observation_space",
    "_metadata",
    "metadata",
    "_cached_spec",
    "spec",
    "_saved_kwargs",
    "_ezpickle_args",
    "_ezpickle_kwargs",
    "screen",
    "clock",
    "viewer",
    "surf",
}


class EpisodeReplay(gym.Wrapper):
    """Records the current episode of the env it wraps: how it was reset and every action since,
    which is all ``restore_env_state`` needs to rebuild a Box2D env's state (see the module)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.episode_start: dict | None = None
        self.episode_actions: list = []

    def reset(self, *, seed=None, options=None):
        base = self.env.unwrapped
        # without a seed the reset draws from np_random (made on first use): keep it as it is now
        drawn_from = None if seed is not None else copy.deepcopy(base.np_random)
        self.episode_start = {"seed": seed, "options": copy.deepcopy(options), "np_random": drawn_from}
        self.episode_actions = []
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        self.episode_actions.append(copy.deepcopy(action))
        return self.env.step(action)


REPLAYED_MODULES = ("gymnasium.envs.box2d.lunar_lander",)  # envs whose whole state is their current episode


def replayable(env: gym.Env) -> gym.Env:
    """``env`` in an ``EpisodeReplay`` when its state is captured by replaying its episode
    (``REPLAYED_MODULES``); any other env as it is."""
    return EpisodeReplay(env) if type(env.unwrapped).__module__ in REPLAYED_MODULES else env


def require_capturable(env: gym.Env, env_id: str) -> None:
    """Refuse, in one line before a run starts, an env whose state a checkpoint could not hold
    (rather than a traceback at the run's first checkpoint)."""
    _refuse_uncapturable(env_id, lambda: capture_env_state(env))


def require_capturable_class(env_id: str, entry_point) -> None:
    """``require_capturable`` by the registered class alone (``module:Class`` or the class), before
    the env is built: what a sweep checks before its runs start."""
    if isinstance(entry_point, str):
        module, _, name = entry_point.partition(":")
    else:
        module, name = entry_point.__module__, entry_point.__name__
    _refuse_uncapturable(env_id, lambda: state_family(module, name))


def _refuse_uncapturable(env_id: str, capture: Callable[[], object]) -> None:
    try:
        capture()
    except TypeError as error:
        raise UsageError(f"{env_id}: {error}; a run checkpoints its envs to resume exactly") from None


def capture_env_state(env: gym.Env) -> dict:
    """Copies of everything that decides what ``env`` (with all its wrappers) returns next."""
    layers = _layers(env)
    base = env.unwrapped
    family = _family(base)
    wrappers = [(type(layer).__name__, _plain_attributes(layer)) for layer in layers]
    state: dict[str, Any] = {"version": STATE_VERSION, "family": family, "env_id": _env_id(env)}
    # one deepcopy for the whole stack: objects that wrappers share stay shared
    state["wrappers"] = copy.deepcopy(wrappers)
    rng = {
        "np_random": copy.deepcopy(getattr(base, "_np_random", None)),
        "np_random_seed": getattr(base, "_np_random_seed", None),
    }
    if family == "mujoco":
        state["base"] = {"mjdata": zlib.compress(pickle.dumps(base.data), 1), **rng}
    elif family == "ale":
        state["base"] = {"ale": base.ale.cloneState(include_rng=True), **rng}
    elif family == "minatar":
        state["base"] = {"game": copy.deepcopy(base.game), **rng}
    elif family == "classification":
        state["base"] = {"mdp": base.mdp_state(), **rng}
    elif family == "replayed":
        _episode_replay(layers, base)  # the episode lives in its wrapper's attributes, captured above
        state["base"] = rng
    else:  # classic control: plain attributes, np_random among them
        state["base"] = copy.deepcopy(_plain_attributes(base))
    return state


def restore_env_state(env: gym.Env, state: dict) -> None:
    """Put ``state`` (from ``capture_env_state``) into ``env``, a freshly built env of the same
    id and wrapper stack, reset or not; ``state`` itself is left unchanged (it is copied)."""
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"env state of version {state.get('version')!r}; this ClipZoo reads version {STATE_VERSION}")
    layers = _layers(env)
    base = env.unwrapped
    family = _family(base)
    here = [type(layer).__name__ for layer in layers]
    saved = [name for name, _ in state["wrappers"]]
    if (state["family"], state["env_id"], saved) != (family, _env_id(env), here):
        raise ValueError(
            f"env state of {state['env_id']} ({' > '.join(saved)}) does not fit {_env_id(env)} ({' > '.join(here)})"
        )
    wrappers = copy.deepcopy(state["wrappers"])
    for layer, (_, attributes) in zip(layers, wrappers):
        for name, value in attributes.items():
            setattr(layer, name, value)
    saved_base = copy.deepcopy(state["base"])
    if family == "classic_control":
        for name, value in saved_base.items():
            setattr(base, name, value)
        return
    if family == "mujoco":
        import mujoco

        saved_data = pickle.loads(zlib.decompress(saved_base["mjdata"]))
        mujoco.mj_copyData(base.data, base.model, saved_data)  # into the env's own MjData: the renderer holds it too
    elif family == "ale":
        base.ale.restoreState(saved_base["ale"])
    elif family == "minatar":
        base.game = saved_base["game"]
    elif family == "classification":
        base.set_mdp_state(saved_base["mdp"])
    elif family == "replayed":
        replay = _episode_replay(layers, base)  # its attributes were restored above
        if replay.episode_start is not None:
            start = replay.episode_start
            if start["seed"] is None:
                base._np_random = copy.deepcopy(start["np_random"])
            base.reset(seed=start["seed"], options=copy.deepcopy(start["options"]))
            for action in replay.episode_actions:
                base.step(copy.deepcopy(action))
    # the private fields: the np_random setter would mark the seed unknown (-1)
    base._np_random, base._np_random_seed = saved_base["np_random"], saved_base["np_random_seed"]


def _layers(env: gym.Env) -> list[gym.Wrapper]:
    """The wrappers from the outermost in, down to (not including) the base env."""
    layers = []
    while isinstance(env, gym.Wrapper):
        layers.append(env)
        env = env.env
    if env is not env.unwrapped:
        raise TypeError(
            f"{type(env).__name__} wraps an env without being a gymnasium.Wrapper; its state cannot be captured"
        )
    return layers


def _episode_replay(layers: list[gym.Wrapper], base: gym.Env) -> EpisodeReplay:
    replays = [layer for layer in layers if isinstance(layer, EpisodeReplay)]
    if not replays:
        raise TypeError(
            f"cannot capture the state of {type(base).__name__} without an EpisodeReplay in its wrapper stack "
            "(envs.state.replayable): its state is rebuilt by replaying the episode"
        )
    return replays[-1]


def _family(base: gym.Env) -> str:
    return state_family(type(base).__module__, type(base).__name__)


def state_family(module: str, name: str) -> str:
    """How the state of an env class (of ``module``) is captured; a TypeError for one it cannot be."""
    if module.startswith("gymnasium.envs.mujoco"):
        return "mujoco"
    if module.startswith("ale_py"):
        return "ale"
    if module.startswith("minatar"):
        return "minatar"
    if module.startswith("gymnasium.envs.classic_control"):
        return "classic_control"
    if module == "envs.classification":
        return "classification"
    if module in REPLAYED_MODULES:
        return "replayed"
    raise TypeError(
        f"cannot capture the state of {name} ({module}): envs/state.py knows MuJoCo, ALE, "
        "MinAtar, LunarLander, gymnasium's classic control envs and the classification MDPs"
    )


def _plain_attributes(obj: object) -> dict[str, Any]:
    """Instance attributes that are state: not in _NOT_STATE, not spaces, envs or callables."""
    return {
        name: value
        for name, value in vars(obj).items()
        if name not in _NOT_STATE and not callable(value) and not isinstance(value, (gym.Space, gym.Env))
    }


def _env_id(env: gym.Env) -> str | None:
    spec = env.unwrapped.spec
    return spec.id if spec is not None else None
