"""Gradient covariance against a naive loop of per-sample backward passes (docs/metrics.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import NatureCNN, TanhActorCritic
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from agents.diagnostics import DiagnosticsLogger, cluster_order, covariance_summary, gradient_covariance, render_heatmap
from agents.plugins.clipping import output_layer_names


def naive_covariance(model: nn.Module, loss_fn, batch: dict, k: int) -> torch.Tensor:
    """The obvious definition: k separate backward passes, one flattened gradient each."""
    params = [p for p in model.parameters() if p.requires_grad]
    gradients = []
    for i in range(k):
        sample = {key: value[i : i + 1] for key, value in batch.items()}
        grads = torch.autograd.grad(loss_fn(model, sample)[0], params, allow_unused=True)
        gradients.append(
            torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)]).double()
        )
    rows = []
    for gi in gradients:
        rows.append(
            [
                float(gi @ gj) / max(float(gi.norm() * gj.norm()), 1e-300) if gi.norm() * gj.norm() > 0 else 0.0
                for gj in gradients
            ]
        )
    return torch.tensor(rows, dtype=torch.float64)


def ppo_loss(model: TanhActorCritic, batch: dict) -> torch.Tensor:
    mean = model.actor(batch["obs"])
    log_prob = torch.distributions.Normal(mean, model.log_std.exp()).log_prob(batch["action"]).sum(-1)
    value = model.critic(batch["obs"]).squeeze(-1)
    return -log_prob * batch["advantage"] + 0.5 * (value - batch["ret"]) ** 2


def td_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    q = model(batch["obs"]).gather(1, batch["action"][:, None]).squeeze(1)
    return (q - batch["target"]) ** 2


def test_mlp_with_a_log_std_vector_matches_the_naive_loop():
    model = TanhActorCritic()
    k = 32
    batch = {"obs": torch.randn(k, 11), "action": torch.randn(k, 3), "advantage": torch.randn(k), "ret": torch.randn(k)}
    fast = gradient_covariance(model, ppo_loss, batch)
    assert not fast.requires_grad
    torch.testing.assert_close(fast.double(), naive_covariance(model, ppo_loss, batch, k), atol=1e-4, rtol=0)
    assert all(p.grad is None for p in model.parameters()), "must not leave gradients behind"


def test_nature_cnn_with_inplace_relu_matches_the_naive_loop():
    model = NatureCNN()
    k = 12
    batch = {"obs": torch.rand(k, 4, 84, 84), "action": torch.randint(0, 6, (k,)), "target": torch.randn(k)}
    fast = gradient_covariance(model, td_loss, batch)
    torch.testing.assert_close(fast.double(), naive_covariance(model, td_loss, batch, k), atol=1e-4, rtol=0)


class Exotic(nn.Module):
    """Grouped/dilated/padded convs, a layer reused on a sequence, a frozen layer and a LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(4, 6, kernel_size=3, groups=2, padding=2, padding_mode="reflect", dilation=2)
        self.conv2d = nn.Conv2d(6, 4, kernel_size=3, groups=2, padding="same", bias=False)
        self.norm = nn.LayerNorm(4)
        self.shared = nn.Linear(4, 5)  # used on every position and again below
        self.tiny = nn.Linear(2, 2)  # few weights: per-sample gradients are cheaper than the kernel trick
        self.frozen = nn.Linear(5, 2)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        h = torch.relu(self.conv1d(x))  # (k, 6, 10)
        h = torch.tanh(self.conv2d(h.unsqueeze(-1).expand(-1, -1, -1, 3)))  # (k, 4, 10, 3)
        sequence = self.norm(h.mean(-1).transpose(1, 2))  # (k, 10, 4)
        out = self.shared(sequence).mean(1) + self.shared(sequence[:, 0])  # second call of the same layer
        return self.frozen(out) + self.tiny(out[:, :2].unsqueeze(1).expand(-1, 3, -1)).sum(1)


def test_exotic_layers_shared_calls_and_frozen_parameters_match_the_naive_loop():
    model = Exotic()
    k = 6
    batch = {"obs": torch.randn(k, 4, 10), "target": torch.randn(k, 2)}

    def loss(m, b):
        return ((m(b["obs"]) - b["target"]) ** 2).sum(-1)

    fast = gradient_covariance(model, loss, batch)
    torch.testing.assert_close(fast.double(), naive_covariance(model, loss, batch, k), atol=1e-4, rtol=0)


def test_a_sample_with_zero_gradient_gets_a_zero_row():
    model = nn.Linear(3, 1)
    batch = {"x": torch.randn(4, 3), "weight": torch.tensor([1.0, 0.0, 2.0, 1.0])}
    covariance = gradient_covariance(model, lambda m, b: m(b["x"]).squeeze(-1) * b["weight"], batch)
    assert torch.all(covariance[1] == 0) and torch.all(covariance[:, 1] == 0)
    assert covariance[0, 0] == pytest.approx(1.0)


def test_bad_loss_shapes_and_batch_mismatches_are_explained():
    model = nn.Linear(3, 1)
    with pytest.raises(ValueError, match="one loss per sample"):
        gradient_covariance(model, lambda m, b: m(b).sum(), torch.randn(4, 3))
    with pytest.raises(ValueError, match="batch of 8 rows but the loss has 4 samples"):
        gradient_covariance(model, lambda m, b: m(torch.cat([b, b])).squeeze(-1)[:4], torch.randn(4, 3))


def test_summary_scalars_count_off_diagonal_entries_only():
    covariance = torch.tensor([[1.0, -0.5, 0.25], [-0.5, 1.0, 0.0], [0.25, 0.0, 1.0]])
    summary = covariance_summary(covariance)
    assert summary["gradcov/mean_offdiag"] == pytest.approx((-0.5 - 0.5 + 0.25 + 0.25 + 0 + 0) / 6)
    assert summary["gradcov/mean_abs_offdiag"] == pytest.approx((0.5 + 0.5 + 0.25 + 0.25 + 0 + 0) / 6)
    assert summary["gradcov/negative_offdiag_frac"] == pytest.approx(2 / 6)


def test_cluster_order_recovers_hidden_blocks():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 10)
    matrix = np.where(labels[:, None] == labels[None, :], 0.9, -0.4) + rng.normal(0, 0.02, (30, 30))
    shuffle = rng.permutation(30)
    shuffled = matrix[np.ix_(shuffle, shuffle)]
    order = cluster_order(shuffled)
    assert sorted(order.tolist()) == list(range(30))
    ordered_labels = labels[shuffle][order]
    assert sum(ordered_labels[i] != ordered_labels[i + 1] for i in range(29)) == 2  # three contiguous blocks


def test_heatmap_colours_are_fixed_to_minus_one_plus_one():
    faint = render_heatmap(torch.full((16, 16), 0.05), cluster=False)
    strong = render_heatmap(torch.ones(16, 16), cluster=False)
    negative = render_heatmap(-torch.ones(16, 16), cluster=False)
    assert faint.dtype == np.uint8 and faint.ndim == 3 and faint.shape[2] == 3
    centre = tuple(s // 2 for s in faint.shape[:2])
    column = int(faint.shape[1] * 0.4)  # inside the matrix panel, left of the colour bar
    r, g, b = faint[centre[0], column].astype(int)
    assert min(r, g, b) > 200, "a value near 0 must render near white on a fixed [-1, 1] scale"
    r, g, b = strong[centre[0], column].astype(int)
    assert r > b + 50
    r, g, b = negative[centre[0], column].astype(int)
    assert b > r + 50


def test_logger_writes_every_tag_the_image_and_the_saved_matrix(tmp_path):
    model = NatureCNN()
    writer = SummaryWriter(tmp_path / "tb")
    logger = DiagnosticsLogger(writer, model, feature_layers=output_layer_names(model), run_dir=tmp_path)
    frames = torch.rand(16, 4, 84, 84)
    batch = {"obs": frames, "action": torch.randint(0, 6, (16,)), "target": torch.randn(16)}
    logger.log_representation(lambda: model(frames), step=7)
    logger.log_weights(step=7, gradient_norm=1.5)
    covariance = logger.log_gradient_covariance(td_loss, batch, step=7)
    writer.close()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in (
        "diagnostics/dormant_frac_0",
        "diagnostics/dormant_frac_0.025",
        "diagnostics/dormant_frac_0.1",
        "diagnostics/dead_units_frac",
        "diagnostics/weight_norm",
        "diagnostics/distance_from_init",
        "diagnostics/grad_norm",
        "diagnostics/effective_rank",
        "diagnostics/srank",
        "gradcov/mean_offdiag",
        "gradcov/negative_offdiag_frac",
        "layers/head.0/weight_norm",
    ):
        assert tag in scalars, tag
    assert events.Tags()["images"] == ["gradcov/heatmap"]
    saved = np.load(tmp_path / "gradcov" / "step_0000000007.npz")
    np.testing.assert_allclose(saved["covariance"], covariance.numpy())
    assert (tmp_path / "gradcov" / "step_0000000007.png").stat().st_size > 1000


def test_noisy_layers_in_training_and_eval_mode_match_the_naive_loop():
    from tianshou.utils.net.discrete import NoisyLinear

    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), NoisyLinear(8, 6, noisy_std=0.5), nn.ReLU(), NoisyLinear(6, 3))
    k = 10
    batch = {"obs": torch.randn(k, 5), "action": torch.randint(0, 3, (k,)), "target": torch.randn(k)}

    def loss(m, b):
        return (m(b["obs"]).gather(1, b["action"][:, None]).squeeze(1) - b["target"]) ** 2

    for training in (True, False):
        model.train(training)
        fast = gradient_covariance(model, loss, batch)
        torch.testing.assert_close(fast.double(), naive_covariance(model, loss, batch, k), atol=1e-4, rtol=0)
