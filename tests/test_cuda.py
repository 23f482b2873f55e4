"""Device portability: every agent end to end on CUDA, checkpoints moving between CUDA and
CPU, RNG states across machines, and update paths that never wait on the device.

The tests marked ``cuda`` (``pytest -m cuda``) need a CUDA device and are skipped, with the
reason, where there is none. The others run anywhere: they simulate CUDA with monkeypatch.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from test_qlearning import PONG, images, scalars

from agents import dqn, ppo_continuous, rainbow
from agents.plugins.clipping import WeightClipping
from runners.base.rundir import StopRequest, restore_rng_state, rng_state

cuda_present = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)"
)

PPO_TINY = (
    "--env-id Hopper-v5 --num-steps 256 --num-minibatches 4 --update-epochs 2 --gradcov-samples 32 "
    "--heatmap-every 2 --checkpoint-every 1"
).split()
CARTPOLE = (
    "--env-id CartPole-v1 --num-envs 2 --batch-size 32 --buffer-size 2000 --learning-starts 200 --n-step "
    "1 --target-update-period 100 --eps-decay-steps 500 --log-every 100 --diagnostics-every 200 "
    "--heatmap-every 400 --gradcov-samples 32 --probe-samples 64 --checkpoint-every 100"
).split()


def state(run_dir: Path) -> str:
    return json.loads((run_dir / "status.json").read_text())["state"]


# ---------------------------------------------------------------- RNG states between machines (CPU)
class CudaGenerators:
    """Stands in for torch.cuda's generators on a machine with ``devices`` GPUs."""

    def __init__(self, monkeypatch, devices: int, initialized: bool = True) -> None:
        self.restored: dict[int, torch.Tensor] = {}
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialized)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
        monkeypatch.setattr(
            torch.cuda, "get_rng_state_all", lambda: [torch.full((16,), d, dtype=torch.uint8) for d in range(devices)]
        )
        record = lambda new_state, device="cuda": self.restored.__setitem__(int(device), new_state)  # noqa: E731
        monkeypatch.setattr(torch.cuda, "set_rng_state", record)
        monkeypatch.setattr(torch.cuda.random, "set_rng_state", record)  # what set_rng_state_all calls


def test_a_cpu_run_on_a_gpu_machine_does_not_start_cuda_for_its_rng_state(monkeypatch):
    CudaGenerators(monkeypatch, devices=1, initialized=False)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("rng_state() started CUDA in a CPU run"))
    assert "cuda" not in rng_state()


def test_a_cuda_run_saves_the_state_of_every_device(monkeypatch):
    CudaGenerators(monkeypatch, devices=2)
    assert [s[0].item() for s in rng_state()["cuda"]] == [0, 1]


def test_cuda_states_are_restored_on_the_devices_present_only(monkeypatch):
    CudaGenerators(monkeypatch, devices=2)
    saved = rng_state()  # written on a 2-GPU machine
    machine = CudaGenerators(monkeypatch, devices=1)  # resumed on a 1-GPU machine
    restore_rng_state(saved)
    assert list(machine.restored) == [0]
    assert torch.equal(machine.restored[0], saved["cuda"][0])


def test_a_checkpoint_written_with_cuda_restores_every_other_stream_on_a_cpu_machine(monkeypatch):
    with monkeypatch.context() as gpu_machine:
        CudaGenerators(gpu_machine, devices=1)
        saved = rng_state()
    assert "cuda" in saved and not torch.cuda.is_available()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.random(), np.random.rand(), torch.rand(1)  # move every stream on
    restore_rng_state(saved)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_a_checkpoint_written_on_cpu_leaves_the_cuda_generators_seeded(monkeypatch):
    saved = rng_state()
    machine = CudaGenerators(monkeypatch, devices=1)
    restore_rng_state(saved)
    assert machine.restored == {}


# ---------------------------------------------------------------- PPO's device choice (CPU)
def test_ppo_auto_device_is_the_cpu_even_where_cuda_is_present(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a CPU build would fail on any CUDA tensor
    ppo_continuous.main([*PPO_TINY, "--total-timesteps", "256", "--no-compile", "--run-dir", str(tmp_path)])
    assert state(tmp_path) == "complete"
    saved = torch.load(tmp_path / "model.pt", weights_only=False)
    assert {t.device.type for t in saved["agent"].values()} == {"cpu"}


# ---------------------------------------------------------------- no waiting on the device (CPU)
def host_reads_during(fn) -> int:
    """``aten::_local_scalar_dense`` calls (every ``.item()`` / ``float(t)``) while ``fn`` runs."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        fn()
    return sum(event.name == "aten::_local_scalar_dense" for event in profile.events())


def test_weight_clipping_counts_clipped_entries_without_reading_them_back():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    clipping = WeightClipping(model, kappa=1.0, fraction_every=1).attach(optimizer)
    bounds = list(clipping.bounds().values())  # weight, bias of each layer, in parameters() order
    outside, reads = 0, 0
    for _ in range(5):
        optimizer.zero_grad()
        model(torch.randn(4, 8)).square().sum().backward()
        with torch.no_grad():  # the reference: entries that SGD's step puts outside kappa / sqrt(fan_in)
            outside += sum(int(((p - p.grad).abs() > bound).sum()) for p, bound in zip(model.parameters(), bounds))
        reads += host_reads_during(optimizer.step)  # the step, the count and the clamp
    assert reads == 0
    assert outside > 0
    assert clipping.pop_clipped_fraction() == pytest.approx(outside / (5 * sum(p.numel() for p in model.parameters())))


# ---------------------------------------------------------------- every agent on CUDA
def assert_complete_with(run_dir, tags: tuple[str, ...]) -> None:
    """The run completed, logged every one of ``tags`` and drew the gradient covariance heatmap."""
    assert state(run_dir) == "complete"
    series = scalars(run_dir)
    for tag in tags:
        assert tag in series, tag
    assert images(run_dir) == ["gradcov/heatmap"]


@pytest.mark.cuda
@cuda_present
def test_ppo_on_cuda_with_weight_clipping_diagnostics_and_heatmap(tmp_path):
    ppo_continuous.main(
        [*PPO_TINY, "--total-timesteps", "1024", "--device", "cuda", "--wc-kappa", "1.5", "--run-dir", str(tmp_path)]
    )
    assert_complete_with(
        tmp_path,
        (
            "charts/episodic_return",
            "losses/approx_kl",
            "diagnostics/saturated_units_frac",
            "diagnostics/effective_rank",
            "diagnostics/grad_norm",
            "diagnostics/distance_from_init",
            "wc/clipped_fraction",
            "gradcov/mean_offdiag",
        ),
    )
    saved = torch.load(tmp_path / "model.pt", weights_only=False, map_location="cpu")
    agent = ppo_continuous.Agent(11, 3)
    agent.load_state_dict(saved["agent"])
    for name, bound in WeightClipping(agent, kappa=1.5).bounds().items():
        assert agent.get_parameter(name).abs().max().item() <= bound + 1e-6, name


@pytest.mark.cuda
@cuda_present
@pytest.mark.parametrize(
    ("agent", "argv"),
    [
        pytest.param(dqn, [*CARTPOLE, "--total-timesteps", "600"], id="dqn-cartpole"),
        pytest.param(rainbow, PONG, id="rainbow-pong"),
    ],
)
def test_dqn_and_rainbow_on_cuda_with_weight_clipping_diagnostics_and_heatmap(tmp_path, agent, argv):
    agent.main([*argv, "--device", "cuda", "--wc-kappa", "2", "--run-dir", str(tmp_path)])
    assert_complete_with(
        tmp_path,
        (
            "losses/td_loss",
            "losses/q_values",
            "diagnostics/dead_units_frac",
            "diagnostics/weight_norm",
            "diagnostics/grad_norm",
            "wc/clipped_fraction",
            "gradcov/mean_offdiag",
            "charts/gradient_steps_per_second",
        ),
    )
    saved = torch.load(tmp_path / "model.pt", weights_only=False, map_location="cpu")
    for name, bound in saved["clipping_bounds"].items():
        assert saved["network"][name].abs().max().item() <= bound + 1e-6, name


# ---------------------------------------------------------------- checkpoints between CUDA and CPU
def stop_after_first_checkpoint(monkeypatch, agent, argv: list[str]) -> None:
    """Run as if the scheduler's stop signal had arrived at once: the run checkpoints at its
    first chance and exits, marked interrupted."""
    with monkeypatch.context() as patch:
        patch.setattr(StopRequest, "requested", property(lambda self: True))
        agent.main(argv)


@pytest.mark.cuda
@cuda_present
@pytest.mark.parametrize(
    ("agent", "argv"),
    [
        pytest.param(ppo_continuous, [*PPO_TINY, "--total-timesteps", "1024"], id="ppo"),
        pytest.param(dqn, [*CARTPOLE, "--total-timesteps", "600"], id="dqn"),
        pytest.param(rainbow, [*CARTPOLE, "--total-timesteps", "600"], id="rainbow"),
    ],
)
@pytest.mark.parametrize(("first", "then"), [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_written_on_one_device_resumes_on_the_other(
    tmp_path, monkeypatch, capsys, agent, argv, first, then
):
    argv = [*argv, "--wc-kappa", "2", "--run-dir", str(tmp_path)]
    stop_after_first_checkpoint(monkeypatch, agent, [*argv, "--device", first])
    assert state(tmp_path) == "interrupted"
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    agent.main([*argv, "--device", then])
    assert f"resuming {tmp_path} from step {saved['global_step']}" in capsys.readouterr().out
    assert state(tmp_path) == "complete"
    series = scalars(tmp_path)
    losses = series["losses/value_loss" if agent is ppo_continuous else "losses/td_loss"]
    steps = [step for step, _ in losses]
    assert steps == sorted(set(steps)) and steps[0] <= saved["global_step"] < steps[-1]
    assert all(np.isfinite(value) for _, value in losses)
