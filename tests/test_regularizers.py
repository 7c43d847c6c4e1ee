"""The local-linearity penalty (ELLE) and its `model.linearity_weight` knob."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.errors import ConfigError
from advlab.models.regularizers import local_linearity_error
from tests.test_robust_classifier import fixed_batch, make_model


class QuadraticLoss(nn.Module):
    """Logits (s, 0, ..., 0) with s = k * sum(x^2): the loss is curved exactly as much as k."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.k * x.flatten(1).pow(2).sum(1)
        return torch.stack([s, *([torch.zeros_like(s)] * 9)], dim=1)


def test_no_ball_or_no_curvature_means_no_error() -> None:
    x, y = fixed_batch(16)
    net = make_model("fgsm_rs").net
    assert local_linearity_error(net, x, y, eps=0.0).item() == 0.0
    constant = QuadraticLoss(0.0)
    assert local_linearity_error(constant, x, y, eps=0.3).item() == 0.0


def test_error_grows_with_curvature_and_radius() -> None:
    x, y = fixed_batch(64)

    def err(k: float, eps: float) -> float:
        torch.manual_seed(0)
        return local_linearity_error(QuadraticLoss(k), x, y, eps).item()

    assert 0 < err(0.01, 0.1) < err(0.01, 0.3)
    assert err(0.01, 0.3) < err(0.03, 0.3)


def test_minimizing_it_flattens_the_loss_inside_the_ball() -> None:
    x, y = fixed_batch(32)
    model = make_model("fgsm_rs")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    torch.manual_seed(0)
    before = local_linearity_error(model.net, x, y, 0.3).item()
    for _ in range(30):
        optimizer.zero_grad()
        local_linearity_error(model.net, x, y, 0.3).backward()
        optimizer.step()
    torch.manual_seed(0)
    after = local_linearity_error(model.net, x, y, 0.3).item()
    assert after < 0.5 * before


@pytest.mark.parametrize(("fraction", "penalized"), [(1.0, 16), (0.25, 4), (0.3, 5)])
def test_training_step_adds_the_weighted_penalty_at_the_attack_eps(
    fraction: float, penalized: int
) -> None:
    x, y = fixed_batch(16)
    plain = make_model("fgsm_rs")
    weighted = make_model("fgsm_rs", linearity_weight=5.0, linearity_fraction=fraction)
    weighted.load_state_dict(plain.state_dict())
    torch.manual_seed(4)
    total = weighted.training_step((x, y), 0)
    torch.manual_seed(4)  # the same draws: the attack's random start, then the penalty's points
    base, _ = plain.objective(plain.net, plain.attack("train"), x, y)
    penalty = local_linearity_error(plain.net, x[:penalized], y[:penalized], 0.3)
    assert penalty.item() > 0
    assert total.item() == pytest.approx(base.item() + 5.0 * penalty.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("method", "weight", "fraction", "message"),
    [
        ("fgsm_rs", -1.0, 1.0, r"model.linearity_weight must be >= 0, got -1.0"),
        ("clean", 1.0, 1.0, r"model.linearity_weight needs a training attack"),
        ("fgsm_rs", 1.0, 0.0, r"model.linearity_fraction must be in \(0, 1\], got 0.0"),
        ("fgsm_rs", 1.0, 1.5, r"model.linearity_fraction must be in \(0, 1\], got 1.5"),
    ],
)
def test_bad_settings_are_refused(
    method: str, weight: float, fraction: float, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_model(method, linearity_weight=weight, linearity_fraction=fraction)
