"""The training run shared by the Tianshou Q-learning agents (``dqn.py``, ``rainbow.py``).

An agent file supplies its ``Args`` (a subclass of ``QLearningArgs``) and an ``AgentSpec``:
how to build the Tianshou algorithm around a network, and its per-sample TD loss for
the gradient covariance. This module does the rest: the checks, then ``QLearningRun`` (envs,
replay buffer, warm-up, Tianshou's off-policy trainer at an exact replay ratio, epsilon
schedule, diagnostics, evaluation, checkpoints and resume), in the run directory.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tianshou.data import Collector
from tianshou.env import DummyVectorEnv
from tianshou.trainer import OffPolicyTrainerParams
from torch.utils.tensorboard import SummaryWriter

from agents.diagnostics import DiagnosticsLogger, GradientNormMeter
from agents.evaluation import Evaluator, log_evaluation
from agents.plugins.assembly import PlasticityPlugins, agent_optimizer
from agents.plugins.clipping import output_layer_names
from agents.qlearning.lean_update import LeanOffPolicyTrainer
from agents.qlearning.logger import RunLogger
from agents.qlearning.options import QLearningArgs, check_args, epoch_length, warmup_length
from agents.qlearning.replay import ReplayObservations, make_replay_buffer
from agents.qlearning.streams import RandomStreams
from agents.qlearning.tianshou_internals import (
    pending_step,
    restore_pending_step,
    sampler,
    set_target_sync_counter,
    target_sync_counter,
    update_step,
)
from agents.qlearning.trainer import ExactBudgetTrainer, PluginOptimizerFactory
from envs.discrete import FRAME_STACK, check_discrete_env, drain_finished_episodes, is_atari, make_env
from envs.state import capture_env_state, restore_env_state
from runners.base.console import plural, tensorboard_command
from runners.base.errors import RunInterrupted
from runners.base.rng import stream_seed
from runners.base.rundir import RunDirectory, StopRequest, execute_run, isolated_rng, restore_rng_state, rng_state
from runners.base.tracking import TRACKING_OPTIONS

RESUMABLE_CHANGES = {
    "run_dir",
    "device",
    "torch_threads",
    "log_every",
    "diagnostics_every",
    "heatmap_every",
    "checkpoint_every",
    "checkpoint_buffer",
    "plasticity_probe_every",
    "sharpness_every",
    "sharpness_density",
    "lean_update",
    "eval_every",
    "eval_episodes",
    "eval_epsilon",
}
RESUMABLE_CHANGES |= TRACKING_OPTIONS  # --track and its W&B options (runners/base/tracking.py)


@dataclass
class AgentSpec:
    """What an agent file supplies to the shared run."""

    name: str
    network: Callable[..., torch.nn.Module]  # (args, obs_shape, actions) -> a freshly initialised network
    # (args, network, actions, optimizer factory, device, target period, streams) -> the Tianshou algorithm
    algorithm: Callable[..., Any]
    td_batch: Callable[..., dict]  # (algorithm, buffer, k) -> tensors of k replay samples with their TD targets
    per_sample_td_loss: Callable[[torch.nn.Module, dict], torch.Tensor]  # (network, td batch) -> k losses
    q_values: Callable[
        [Any, torch.nn.Module, Any], torch.Tensor
    ]  # (algorithm, network, obs) -> (batch, actions) expected Q
    prioritized: Callable[[Any], dict | None] = lambda args: None  # buffer options, or None for uniform replay
    on_training_step: Callable[[Any, Any, Any, int], None] = lambda args, algorithm, buffer, step: None
    clipping_include: Callable[[Any], list[str]] = lambda args: []  # extra parameter patterns to clip


def build_agent(
    spec: AgentSpec,
    args: QLearningArgs,
    obs_shape: tuple[int, ...],
    actions: int,
    optimizer_factory,
    device: torch.device,
    target_period: int,
    streams: RandomStreams | None = None,
) -> tuple[Any, torch.nn.Module]:
    """The agent's network, initialised on the run's network-init stream, and its Tianshou algorithm
    around it (the optimizer factory attaches the plug-ins when the algorithm builds its optimizer)."""
    streams = streams or RandomStreams(args.seed)
    with streams.network_init.active():
        network = spec.network(args, obs_shape, actions).to(device)
    return spec.algorithm(args, network, actions, optimizer_factory, device, target_period, streams), network


def main(spec: AgentSpec, args_class: type[QLearningArgs], argv: list[str] | None, prog: str) -> Path:
    from runners.base.config import parse_args

    args = parse_args(args_class, argv, prog=prog)
    plan = check_args(args)
    action_space = check_discrete_env(args.env_id)
    run_name = f"{args.env_id.replace('/', '_')}__{spec.name}__{args.seed}__{int(time.time())}"
    return execute_run(
        args.run_dir or Path("runs") / run_name,
        asdict(args),
        RESUMABLE_CHANGES,
        lambda run, writer, checkpoint: train(spec, args, plan, int(action_space.n), run, writer, checkpoint),
    )


class _Preempted(Exception):
    """Raised inside the trainer after a stop signal's checkpoint, to leave its loop."""


def train(
    spec: AgentSpec,
    args: QLearningArgs,
    plan: tuple[int, int, int],
    actions: int,
    run: RunDirectory,
    writer: SummaryWriter,
    checkpoint: dict | None,
) -> None:
    QLearningRun(spec, args, plan, actions, run, writer).train(checkpoint)


class QLearningRun:
    """One Q-learning run, one way through: envs -> network and algorithm (the plug-ins on its
    optimizer) -> replay buffer and collector -> a restored checkpoint or the random warm-up ->
    Tianshou's off-policy trainer, which calls ``before_collect`` ahead of every collect and
    ``end_of_epoch`` after every epoch (schedules, logs, diagnostics, evaluation, checkpoints) ->
    the final diagnostics, the model and the run's status.

    ``schedule`` holds the env steps of the next diagnostics, heatmap, checkpoint, probes and
    evaluation round and the last step logged; checkpoints keep it."""

    def __init__(
        self,
        spec: AgentSpec,
        args: QLearningArgs,
        plan: tuple[int, int, int],
        actions: int,
        run: RunDirectory,
        writer: SummaryWriter,
    ) -> None:
        self.spec, self.args, self.actions, self.run, self.writer = spec, args, actions, run, writer
        self.steps_per_collect, self.gradient_steps_per_collect, self.target_period = plan
        # Every stream is its own, derived from --seed (runners/base/rng.py); the global generators are
        # seeded too, for any library draw not yet given a stream of its own.
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        self.streams = RandomStreams(args.seed)
        torch.set_num_threads(args.torch_threads)
        self.device = torch.device(
            "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
        )

        self.envs = DummyVectorEnv(
            [make_env(args.env_id, training=True, sticky_actions=args.sticky_actions) for _ in range(args.num_envs)]
        )
        # every env its own stream: no two seeds, and no two envs of a seed, share an env seed
        self.envs.seed([stream_seed(args.seed, f"envs/{index}") for index in range(args.num_envs)])
        self.obs_shape = self.envs.workers[0].env.observation_space.shape  # a worker's env: the innermost one
        self.factory = PluginOptimizerFactory(
            lambda params: agent_optimizer(args, params, fused=args.lean_update),
            lambda network: PlasticityPlugins(
                network,
                args,
                self.fresh_network,
                seed=stream_seed(args.seed, "interventions"),
                target_period=self.target_period,  # ReDo: replay observations on a stream of their own
                sample_inputs=ReplayObservations(lambda: self.buffer, args.redo_samples, args.seed, self.device),
                clipping_include=spec.clipping_include(args),
            ),
        )
        self.algorithm, self.network = build_agent(
            spec, args, self.obs_shape, actions, self.factory, self.device, self.target_period, self.streams
        )
        self.plugins = self.factory.plugins
        self.gradient_norm = GradientNormMeter().attach(self.factory.optimizer)  # its hook last, as before
        frame_stack = FRAME_STACK if is_atari(args.env_id) else 1
        self.buffer = make_replay_buffer(
            args.buffer_size, args.num_envs, frame_stack, spec.prioritized(args), n_step=args.n_step, seed=args.seed
        )
        self.collector = Collector(self.algorithm, self.envs, self.buffer, exploration_noise=True)
        self.diagnostics = DiagnosticsLogger(
            writer, self.network, feature_layers=output_layer_names(self.network), run_dir=run.path
        )
        self.diagnostics_seed = stream_seed(args.seed, "diagnostics")
        self.evaluator = (
            Evaluator(make_env(args.env_id, training=False, sticky_actions=args.sticky_actions), args.eval_episodes)
            if args.eval_every
            else None
        )
        self.save_buffer = args.checkpoint_buffer == "always"

        self.warmup_steps = warmup_length(args)
        self.epoch_steps = epoch_length(args, self.steps_per_collect)
        self.total_steps = args.total_timesteps
        self.max_epochs = math.ceil(
            (self.total_steps - self.warmup_steps) / self.epoch_steps
        )  # the last may be shorter
        self.schedule = {
            "next_diagnostics": args.diagnostics_every,
            "next_heatmap": args.heatmap_every,
            "next_checkpoint": args.checkpoint_every,
            "next_plasticity_probe": args.plasticity_probe_every,
            "next_sharpness": args.sharpness_every,
            "next_eval": args.eval_every,
            "last_eval": -1,
            "logged_through": -1,
        }
        self.trainer = self.logger = self.stop = None

    def fresh_network(self) -> torch.nn.Module:  # resets and probes draw it on streams of their own (isolated_rng)
        return self.spec.network(self.args, self.obs_shape, self.actions).to(self.device)

    # ------------------------------------------------------------ start: a checkpoint or the warm-up
    def start(self, checkpoint: dict | None) -> tuple[int, int, int] | None:
        """Restore ``checkpoint`` (or start afresh), fill or restore what collecting continues from,
        and print the run's line; returns the (epoch, env step, update step) the trainer resumes at."""
        args, run, writer = self.args, self.run, self.writer
        restored = None
        if checkpoint:
            self.algorithm.load_state_dict(checkpoint["algorithm"])
            self.algorithm.optim.load_state_dict(checkpoint["optimizer"])
            set_target_sync_counter(self.algorithm, checkpoint["target_update_counter"])
            if self.factory.clipping is not None:
                self.factory.clipping.load_state_dict(checkpoint["clipping"])
            self.plugins.load_state_dict(checkpoint.get("plugins"))
            self.factory.gradient_steps = checkpoint["gradient_steps"]
            self.diagnostics.load_state_dict(checkpoint["diagnostics"])
            restored = (checkpoint["epoch"], checkpoint["env_step"], checkpoint["update_step"])
            self.gradient_norm.due = checkpoint.get("measure_gradient_norm", False)
            self.streams.load_state_dict(checkpoint["streams"])
            if checkpoint.get("buffer") is not None:
                self.buffer = checkpoint["buffer"]
                self.collector = Collector(self.algorithm, self.envs, self.buffer, exploration_noise=True)
            print(f"resuming {run.path} from step {checkpoint['global_step']}")
        else:
            writer.add_text(
                "hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items())
            )
        if checkpoint and checkpoint.get("buffer") is not None:
            # exact resume: the buffer, every env mid-episode and the collector's last observations
            restore_collection_state(self.collector, checkpoint["collection"])
            print(
                f"replay buffer restored from the checkpoint ({len(self.buffer):,} transitions); "
                "envs continue their episodes"
            )
        else:
            self.collector.reset(reset_buffer=False)
            if checkpoint:
                reason = (
                    "this resume is not exact: the checkpoint holds no replay buffer (--checkpoint-buffer never), "
                    "so it is refilled with random actions and the episodes in flight restart"
                )
                print(reason, flush=True)
                writer.add_text("resume", f"step {checkpoint['global_step']}: {reason}", checkpoint["global_step"])
                run.record_inexact_resume(checkpoint["global_step"], reason)
            print(f"warm-up: filling the replay buffer with {plural(self.warmup_steps, 'random env step')}", flush=True)
            self.collector.collect(n_step=self.warmup_steps, random=True)
            self.collector.reset_stat()
            drain_finished_episodes(self.envs)  # random-policy games are not the agent's: they are not logged
        if checkpoint:
            restore_rng_state(checkpoint["rng"])
        print(
            f"{self.spec.name} on {args.env_id}, {self.total_steps:,} env steps at replay ratio {args.replay_ratio} "
            f"({plural(self.steps_per_collect, 'env step')} and "
            f"{plural(self.gradient_steps_per_collect, 'gradient step')} per collect), weight clipping "
            f"{'kappa=' + str(args.wc_kappa) if self.factory.clipping else 'off'}, "
            f"other interventions: {self.plugins.describe()}; TensorBoard: {tensorboard_command(run.path)}",
            flush=True,
        )
        if checkpoint:
            self.schedule.update(checkpoint["schedule"])
        return restored

    # ------------------------------------------------------------ the trainer's loop
    def train(self, checkpoint: dict | None) -> None:
        restored = self.start(checkpoint)
        self.logger = RunLogger(
            self.writer,
            self.envs,
            self.factory,
            interval=self.epoch_steps,
            warmup_steps=self.warmup_steps,
            restored=restored,
            total_steps=self.total_steps,
            report_progress=self.run.report_progress,
        )
        if checkpoint:
            self.logger.load_state_dict(checkpoint.get("logger"))
        params = OffPolicyTrainerParams(
            training_collector=self.collector,
            max_epochs=self.max_epochs,
            epoch_num_steps=self.epoch_steps,  # a run resumed mid-epoch finishes that epoch first (ExactBudgetTrainer)
            collection_step_num_env_steps=self.steps_per_collect,
            update_step_num_gradient_steps_per_sample=self.args.replay_ratio,
            batch_size=self.args.batch_size,
            training_fn=self.before_collect,
            save_checkpoint_fn=self.end_of_epoch,
            logger=self.logger,
            resume_from_log=checkpoint is not None,
            test_collector=None,
            show_progress=False,
            verbose=False,
        )
        self.run.set_status(
            "running",
            global_step=self.warmup_steps + (restored[1] if restored else 0),
            total_timesteps=self.total_steps,
        )
        with StopRequest() as self.stop:
            trainer_class = LeanOffPolicyTrainer if self.args.lean_update else ExactBudgetTrainer
            self.trainer = trainer_class(
                self.algorithm, params, training_env_steps=self.total_steps - self.warmup_steps
            )
            try:
                self.trainer.run(reset_collectors=False)
            except _Preempted:
                self.envs.close()
                raise RunInterrupted(self.stop.signal_name, self.run.path) from None
        self.finish()

    def before_collect(self, epoch: int, env_step: int) -> None:
        """Called by the trainer before every collect: schedules, then what is logged at this step
        (unless the checkpoint at this step logged it already), then a stop request's checkpoint."""
        self.set_schedules(env_step)
        if env_step + self.steps_per_collect >= self.total_steps - self.warmup_steps:
            self.gradient_norm.measure_next()  # the last collect's update: its norm goes with the final diagnostics
        if env_step > self.schedule["logged_through"]:
            self.log_step(env_step)
        if self.stop.requested:  # between collects the state is whole: checkpoint here, mid-epoch
            self.end_of_epoch(epoch - 1, env_step, update_step(self.trainer) - 1, mid_epoch=True)

    def set_schedules(self, env_step: int) -> None:
        args = self.args
        fraction = min(1.0, env_step / args.eps_decay_steps) if args.eps_decay_steps else 1.0
        self.algorithm.policy.set_eps_training(args.eps_start + fraction * (args.eps_end - args.eps_start))
        self.spec.on_training_step(args, self.algorithm, self.buffer, env_step)

    # ------------------------------------------------------------ what is logged at a step
    def log_step(self, env_step: int) -> None:
        """Everything logged at one env step. It runs before that step's checkpoint, so a resume
        (which keeps the events up to the checkpoint's step) neither repeats nor loses a point."""
        args, schedule, factory = self.args, self.schedule, self.factory
        schedule["logged_through"] = env_step
        step = self.warmup_steps + env_step
        if (norm := self.gradient_norm.take()) is not None:
            self.writer.add_scalar("diagnostics/grad_norm", norm, step)
        if env_step and env_step % self.epoch_steps == 0:
            self.diagnostics.log_clipping(factory.clipping, step)
            self.diagnostics.log_scalars(self.plugins.metrics(), step)
        with self.plugins.paused():
            if args.diagnostics_every and env_step >= schedule["next_diagnostics"]:
                heatmap = bool(args.heatmap_every) and env_step >= schedule["next_heatmap"]
                self.log_diagnostics(step, heatmap)
                schedule["next_diagnostics"] += args.diagnostics_every
                if heatmap:
                    schedule["next_heatmap"] += args.heatmap_every
            if args.plasticity_probe_every and env_step >= schedule["next_plasticity_probe"]:
                schedule["next_plasticity_probe"] += args.plasticity_probe_every
                self.run_probes(step, plasticity=True)
            if args.sharpness_every and env_step >= schedule["next_sharpness"]:
                schedule["next_sharpness"] += args.sharpness_every
                self.run_probes(step, sharpness=True)
            if args.eval_every and step >= schedule["next_eval"]:
                while schedule["next_eval"] <= step:
                    schedule["next_eval"] += args.eval_every
                self.evaluate(step)

    def log_diagnostics(self, step: int, heatmap: bool) -> None:
        # its own draws: training's stay as without diagnostics
        with self.probe_randomness(self.diagnostics_seed * 1_000_003 + step + 1):
            self.diagnostic_batches(step, heatmap)

    def diagnostic_batches(self, step: int, heatmap: bool) -> None:
        args, network, diagnostics = self.args, self.network, self.diagnostics
        probe, _ = self.buffer.sample(args.probe_samples)
        diagnostics.log_representation(lambda: network(probe.obs), step)
        diagnostics.log_weights(step)
        with torch.no_grad():
            q_taken = self.spec.q_values(self.algorithm, network, probe.obs).gather(
                1, torch.as_tensor(probe.act, device=self.device).long()[:, None]
            )
        self.writer.add_scalar("losses/q_values", q_taken.mean().item(), step)
        self.writer.add_scalar("diagnostics/q_max", q_taken.max().item(), step)
        self.gradient_norm.measure_next()
        if heatmap:
            diagnostics.log_gradient_covariance(
                self.spec.per_sample_td_loss,
                self.spec.td_batch(self.algorithm, self.buffer, args.gradcov_samples),
                step,
            )

    @contextlib.contextmanager
    def probe_randomness(self, seed: int):
        """The probes' own random streams; Tianshou's buffers (and each env's sub-buffer) sample
        from generators of their own."""
        generators = [sampler(b) for b in [self.buffer, *getattr(self.buffer, "buffers", [])]]
        saved = [generator.get_state() for generator in generators]
        with isolated_rng(seed):
            for index, generator in enumerate(generators):
                generator.seed((seed + index) % 2**32)
            try:
                yield
            finally:
                for generator, state in zip(generators, saved):
                    generator.set_state(state)

    def run_probes(self, step: int, plasticity: bool = False, sharpness: bool = False) -> None:
        """Plasticity probe on replay observations (predictions: Q-values); Hessian of the TD loss."""
        args, spec, algorithm = self.args, self.spec, self.algorithm
        seed = self.diagnostics_seed * 1_000_003 + step
        if plasticity:
            with self.probe_randomness(seed):
                inputs = self.buffer.sample(args.plasticity_probe_samples)[0].obs
            self.diagnostics.log_plasticity(
                self.fresh_network,
                lambda net, obs: spec.q_values(algorithm, net, obs),
                inputs,
                lambda params: agent_optimizer(args, params),
                step,
                steps=args.plasticity_probe_steps,
                targets=args.plasticity_probe_targets,
                seed=seed,
            )
        if sharpness:
            with self.probe_randomness(seed):
                batch = spec.td_batch(algorithm, self.buffer, args.sharpness_samples)
            self.diagnostics.log_sharpness(
                lambda: spec.per_sample_td_loss(self.network, batch).mean(),
                step,
                iterations=args.sharpness_iterations,
                seed=seed,
                save_density=args.sharpness_density,
            )

    def evaluate(self, step: int) -> None:
        """One evaluation round: greedy actions (epsilon --eval-epsilon) of the network in eval mode,
        which for Rainbow's noisy layers means their mean weights; every module's mode is put back."""
        network = self.network
        modes = [(module, module.training) for module in network.modules()]
        network.eval()

        def act(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            with torch.no_grad():
                greedy = self.spec.q_values(self.algorithm, network, obs).argmax(1).cpu().numpy()
            explore = rng.random(len(greedy)) < self.args.eval_epsilon
            return np.where(explore, rng.integers(self.actions, size=len(greedy)), greedy)

        try:
            returns, lengths = self.evaluator.run(act, step)
        finally:
            for module, mode in modes:
                module.training = mode
        log_evaluation(self.writer, returns, lengths, step)
        self.schedule["last_eval"] = step

    # ------------------------------------------------------------ checkpoints
    def end_of_epoch(self, epoch: int, env_step: int, update_step: int, mid_epoch: bool = False) -> None:
        """The trainer's ``save_checkpoint_fn``, called at the end of every epoch (``epoch`` epochs
        done), and ``before_collect``'s on a stop request: the checkpoint, when one is due."""
        final = epoch >= self.max_epochs and not mid_epoch
        global_step = self.warmup_steps + env_step
        if not (final or self.stop.requested or global_step >= self.schedule["next_checkpoint"]):
            return
        if not final and env_step > self.schedule["logged_through"]:
            self.set_schedules(env_step)  # what the next collect's call would set first
            self.log_step(env_step)
        while self.schedule["next_checkpoint"] <= global_step:
            self.schedule["next_checkpoint"] += self.args.checkpoint_every
        self.writer.flush()  # every event up to this step is on disk before the checkpoint says so
        self.run.save_checkpoint(self.checkpoint(epoch, env_step, update_step, global_step))
        self.run.set_status("running", global_step=global_step, total_timesteps=self.total_steps)
        if self.stop.requested and not final:
            self.run.set_status(
                "interrupted", global_step=global_step, total_timesteps=self.total_steps, signal=self.stop.signal_name
            )
            raise _Preempted

    def checkpoint(self, epoch: int, env_step: int, update_step: int, global_step: int) -> dict:
        """Everything the run continues from (``start`` reads it back)."""
        factory = self.factory
        return {
            "algorithm": self.algorithm.state_dict(),
            "optimizer": self.algorithm.optim.state_dict(),
            "target_update_counter": target_sync_counter(self.algorithm),
            "gradient_steps": factory.gradient_steps,
            "clipping": factory.clipping.state_dict() if factory.clipping else None,
            "plugins": self.plugins.state_dict(),
            "diagnostics": self.diagnostics.state_dict(),
            "rng": rng_state(),
            "schedule": dict(self.schedule),
            "epoch": epoch,
            "env_step": env_step,
            "update_step": update_step,
            "global_step": global_step,
            "buffer": self.buffer if self.save_buffer else None,
            "logger": self.logger.state_dict(),
            "collection": collection_state(self.collector) if self.save_buffer else None,
            "streams": self.streams.state_dict(),
            "measure_gradient_norm": self.gradient_norm.due,
        }

    # ------------------------------------------------------------ the end
    def finish(self) -> None:
        """Every run ends with the full diagnostics, heatmap included, even a short one; then the model."""
        args, factory, total_steps = self.args, self.factory, self.total_steps
        if (norm := self.gradient_norm.take()) is not None:
            self.writer.add_scalar("diagnostics/grad_norm", norm, total_steps)
        with self.plugins.paused():
            self.log_diagnostics(total_steps, heatmap=True)
            self.run_probes(
                total_steps, plasticity=bool(args.plasticity_probe_every), sharpness=bool(args.sharpness_every)
            )
            if self.evaluator is not None and self.schedule["last_eval"] != total_steps:
                self.evaluate(total_steps)
        self.diagnostics.log_clipping(factory.clipping, total_steps)
        self.diagnostics.log_scalars(self.plugins.metrics(), total_steps)
        self.run.save_model(
            {
                "network": self.network.state_dict(),
                "args": asdict(args),
                "clipping_bounds": factory.clipping.bounds() if factory.clipping else None,
            }
        )
        self.run.set_status(
            "complete",
            global_step=total_steps,
            total_timesteps=total_steps,
            replay_ratio=factory.gradient_steps / max(total_steps - self.warmup_steps, 1),
            **self.run.resume_record(),
        )
        self.envs.close()
        if self.evaluator is not None:
            self.evaluator.close()
        print(f"done: {self.run.path} ({tensorboard_command(self.run.path)})")


def collection_state(collector: Collector) -> dict:
    """What collecting continues from, besides the replay buffer: every env's full state
    mid-episode (envs/state.py), its action space's sampler, and the collector's last
    observations and infos."""
    workers = collector.env.workers
    return {
        "envs": [capture_env_state(worker.env) for worker in workers],
        "action_spaces": [worker.action_space.np_random.bit_generator.state for worker in workers],
        **pending_step(collector),
        "counts": (collector.collect_step, collector.collect_episode),
    }


def restore_collection_state(collector: Collector, state: dict) -> None:
    workers = collector.env.workers
    for worker, env_state, sampler_state in zip(workers, state["envs"], state["action_spaces"], strict=True):
        restore_env_state(worker.env, env_state)
        worker.action_space.np_random.bit_generator.state = sampler_state
    restore_pending_step(collector, state)
    collector.collect_step, collector.collect_episode = state["counts"]
