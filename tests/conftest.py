"""Shared test fixtures and helpers: small reference networks, deterministic seeds, writers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """Tests marked slow run first (the sort is stable): the two workers start on the long tests and
    the short ones are left to even out the finish, rather than a long test starting last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


class NatureCNN(nn.Module):
    """The DQN Nature network (Mnih et al. 2015) on 4x84x84 frames."""

    output_layers = ("head.2",)

    def __init__(self, actions: int = 6) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(3136, 512), nn.ReLU(inplace=True), nn.Linear(512, actions))

    def forward(self, x):
        return self.head(self.trunk(x))


class TanhActorCritic(nn.Module):
    """CleanRL's PPO network shape: separate 64-64 tanh actor and critic, state-independent log-std."""

    output_layers = ("actor.4", "critic.4")

    def __init__(self, obs_dim: int = 11, act_dim: int = 3) -> None:
        super().__init__()
        self.actor = nn.Sequential(
            nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, act_dim)
        )
        self.critic = nn.Sequential(nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))
        self.log_std = nn.Parameter(torch.zeros(act_dim))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def clipzoo(capsys):
    """Run ``clipzoo ARGV`` in this process (no interpreter start-up per call) and return its exit
    code, stdout and stderr. An uncaught exception propagates, so "no traceback" is checked too."""
    from runners import cli

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            cli.main(list(argv))
            code = 0
        except SystemExit as exit_info:
            code = exit_info.code if isinstance(exit_info.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def another_writer(run_dir):
    """A TensorBoard writer for a directory that already holds event files, whose file sorts
    after them, as execute_run's writer does on a resume (runners.base.rundir explains why)."""
    from torch.utils.tensorboard import SummaryWriter

    from runners.base.rundir import wait_for_a_later_second_than_the_newest_event_file

    wait_for_a_later_second_than_the_newest_event_file(Path(run_dir))
    return SummaryWriter(str(run_dir))
