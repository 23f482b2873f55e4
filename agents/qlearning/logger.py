"""The Q-learning run's logger: Tianshou's logger interface, writing the zoo's TensorBoard tags."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from tianshou.utils.logger.logger_base import BaseLogger

from agents.qlearning.trainer import PluginOptimizerFactory
from envs.discrete import drain_finished_episodes
from runners.base.rundir import duration


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
