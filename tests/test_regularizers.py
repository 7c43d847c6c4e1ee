"""The local-linearity penalty (ELLE) and its `model.linearity_weight` knob."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.errors import ConfigError
from advlab.models.regularizers import AdaptiveLinearityWeight, local_linearity_error
from advlab.nets import StridedCNN
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


def test_penalty_sees_the_network_without_dropout() -> None:
    """With dropout on, three forward passes would draw three masks and the penalty would measure
    the masks; it must equal the eval-mode network's, and leave dropout on afterwards."""
    x, y = fixed_batch(16)
    torch.manual_seed(0)
    net = StridedCNN(channels=(4, 8), hidden=32)
    net.head.insert(1, nn.Dropout(0.5))
    with torch.no_grad():  # a linear network in the ball would give an error of exactly 0
        net.head[-1].weight.mul_(50)

    def err(mode: str) -> float:
        getattr(net, mode)()
        torch.manual_seed(1)
        return local_linearity_error(net, x, y, eps=0.3).item()

    no_dropout = err("eval")
    assert no_dropout > 0
    assert err("train") == pytest.approx(no_dropout, rel=1e-6)
    assert all(m.training for m in net.modules())


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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"linearity_schedule": "cyclic"},
            r"model.linearity_schedule='cyclic' is not one of "
            r"constant, adaptive",
        ),
        ({"linearity_decay": 0.0}, r"model.linearity_decay must be in \(0, 1\], got 0.0"),
        ({"linearity_decay": 1.5}, r"model.linearity_decay must be in \(0, 1\], got 1.5"),
        ({"linearity_sensitivity": -1.0}, r"model.linearity_sensitivity must be >= 0, got -1.0"),
    ],
)
def test_bad_adaptive_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_model("fgsm_rs", linearity_weight=1.0, **kwargs)


def weights_for(values: list[float], schedule: AdaptiveLinearityWeight) -> list[float]:
    return [schedule.step(torch.tensor(v)).item() for v in values]


def test_adaptive_weight_is_off_until_a_spike_then_decays() -> None:
    schedule = AdaptiveLinearityWeight(max_weight=10.0, decay=0.5, sensitivity=2.0)
    steady = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95]
    assert weights_for(steady, schedule) == [0.0] * 6
    # the spike's own step still uses the earlier weight; the next ones get 10, 5, 2.5
    assert weights_for([3.0, 1.0, 1.0, 1.0], schedule) == pytest.approx([0.0, 10.0, 5.0, 2.5])


def test_a_value_within_the_sensitivity_is_not_a_spike() -> None:
    history = [1.0, 1.2, 0.8, 1.1, 0.9]
    mean, std = torch.tensor(history).mean().item(), torch.tensor(history).std(correction=0).item()
    below = AdaptiveLinearityWeight(10.0, sensitivity=2.0)
    weights_for([*history, mean + 1.9 * std], below)
    above = AdaptiveLinearityWeight(10.0, sensitivity=2.0)
    weights_for([*history, mean + 2.1 * std], above)
    assert below.weight.item() == 0.0
    assert above.weight.item() == 10.0


def test_running_statistics_match_the_whole_history() -> None:
    values = torch.rand(500, generator=torch.Generator().manual_seed(0)) * 3 + 100
    schedule = AdaptiveLinearityWeight(10.0)
    weights_for(values.tolist(), schedule)
    assert schedule.mean.item() == pytest.approx(values.mean().item(), rel=1e-6)
    std = (schedule.sq_dev / schedule.count).sqrt().item()
    assert std == pytest.approx(values.std(correction=0).item(), rel=1e-4)


def test_adaptive_state_survives_a_checkpoint() -> None:
    values = [1.0, 1.0, 1.1, 0.9, 5.0, 1.0]
    first = make_model("fgsm_rs", linearity_weight=10.0, linearity_schedule="adaptive")
    weights_for(values, first.adaptive_linearity)
    checkpoint: dict = {}
    first.on_save_checkpoint(checkpoint)
    resumed = make_model("fgsm_rs", linearity_weight=10.0, linearity_schedule="adaptive")
    resumed.on_load_checkpoint(checkpoint)
    more = [1.0, 7.0, 1.0]
    assert weights_for(more, resumed.adaptive_linearity) == weights_for(
        more, first.adaptive_linearity
    )
    assert resumed.adaptive_linearity.weight.item() == pytest.approx(10.0 * 0.99)


def test_adaptive_training_step_starts_without_the_penalty() -> None:
    x, y = fixed_batch(16)
    plain = make_model("fgsm_rs")
    adaptive = make_model("fgsm_rs", linearity_weight=5.0, linearity_schedule="adaptive")
    adaptive.load_state_dict(plain.state_dict())
    torch.manual_seed(4)
    total = adaptive.training_step((x, y), 0)
    torch.manual_seed(4)
    base, _ = plain.objective(plain.net, plain.attack("train"), x, y)
    assert total.item() == pytest.approx(base.item(), rel=1e-6)
    assert adaptive.adaptive_linearity.count == 1
