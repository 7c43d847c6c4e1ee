"""Randomized smoothing: Cohen et al.'s statistics on hand-computed cases, PREDICT and CERTIFY on
models whose votes are known, the noise's level and seed, and one-line errors for bad knobs."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import norm
from torch import nn

from advlab.attacks.smoothed_pgd import SmoothedPGD
from advlab.defences import (
    ABSTAIN,
    SmoothedClassifier,
    lower_confidence_bound,
    radius_cap,
    vote_is_significant,
)
from advlab.errors import ConfigError
from advlab.nets import PreActResNet18, SmallCNN


class Constant(nn.Module):
    """Ignores its input: every noisy copy votes for `label`."""

    def __init__(self, label: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.logits = torch.nn.functional.one_hot(torch.tensor(label), num_classes).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1) + 0 * self.weight


class Alternating(nn.Module):
    """Row i of every forward pass votes for class i % 2: an exact tie over an even count."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.arange(len(x)) % 2, 10).float() + 0 * self.weight


class FarPixel(nn.Module):
    """Class 1 when the first pixel is more than 1 from 0.5, else class 0: under noise of
    sigma 1 around 0.5, class 1 wins with probability 2 * (1 - Phi(1)) = 0.3173."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        far = ((x.flatten(1)[:, 0] - 0.5).abs() > 1).long()
        return torch.nn.functional.one_hot(far, 10).float() + 0 * self.weight


def images(count: int = 3, shape: tuple[int, ...] = (1, 28, 28)) -> torch.Tensor:
    return torch.rand(count, *shape, generator=torch.Generator().manual_seed(0))


# ---- statistics -------------------------------------------------------------------------------
def test_all_votes_for_one_class_bound_its_probability_by_alpha_to_the_one_over_n() -> None:
    # P(n of n | p) = p^n = alpha  =>  p = alpha^(1/n)
    assert lower_confidence_bound(10_000, 10_000, 0.001) == pytest.approx(0.001**1e-4, abs=1e-12)
    assert lower_confidence_bound(100, 100, 0.05) == pytest.approx(0.05**0.01, abs=1e-12)
    assert lower_confidence_bound(0, 100, 0.001) == 0.0


def test_clopper_pearson_matches_the_textbook_value() -> None:
    # 9 of 10: the one-sided 95% lower bound solves P(X >= 9 | p) = 0.05
    p = lower_confidence_bound(9, 10, 0.05)
    assert p == pytest.approx(0.60584, abs=1e-5)
    assert 10 * p**9 * (1 - p) + p**10 == pytest.approx(0.05, abs=1e-9)


def test_the_radius_cap_is_about_3_2_sigma_at_n_10000() -> None:
    assert radius_cap(10_000, 0.001, 1.0) == pytest.approx(3.1986, abs=1e-4)
    assert radius_cap(10_000, 0.001, 0.25) == pytest.approx(0.25 * 3.1986, abs=1e-4)
    assert radius_cap(100_000, 0.001, 1.0) == pytest.approx(3.8115, abs=1e-4)


def test_a_tie_is_not_significant_and_a_landslide_is() -> None:
    assert not vote_is_significant(50, 50, 0.001)
    assert not vote_is_significant(60, 40, 0.001)  # two-sided p = 0.057
    assert vote_is_significant(100, 0, 0.001)  # p = 2 * 0.5^100


# ---- PREDICT and CERTIFY ----------------------------------------------------------------------
def test_a_model_that_ignores_its_input_certifies_every_image_to_the_cap() -> None:
    smoothed = SmoothedClassifier(Constant(3), 10, sigma=0.5, n=10_000, n0=100, batch=2500)
    found = smoothed.certify(images(3))
    assert found.prediction.tolist() == [3, 3, 3]
    assert found.p_lower.tolist() == pytest.approx([0.001**1e-4] * 3, abs=1e-12)
    assert found.radius.tolist() == pytest.approx([smoothed.radius_cap] * 3, abs=1e-9)
    assert smoothed.radius_cap == pytest.approx(0.5 * 3.1986, abs=1e-4)
    assert smoothed.predict(images(2)).tolist() == [3, 3]


def test_a_tie_abstains_in_predict_and_certify() -> None:
    smoothed = SmoothedClassifier(Alternating(), 10, sigma=0.25, n=200, n0=20, batch=100)
    assert smoothed.counts(images(2), 200)[:, :2].tolist() == [[100, 100], [100, 100]]
    assert smoothed.predict(images(2)).tolist() == [ABSTAIN, ABSTAIN]
    found = smoothed.certify(images(2))
    assert found.prediction.tolist() == [ABSTAIN, ABSTAIN]
    assert found.radius.tolist() == [0.0, 0.0]
    assert (found.p_lower < 0.5).all()


def test_the_noise_has_the_stated_sigma() -> None:
    x = torch.full((1, 1, 4, 4), 0.5)
    smoothed = SmoothedClassifier(FarPixel(), 10, sigma=1.0, n=40_000, n0=10, batch=10_000)
    share = smoothed.counts(x, 40_000)[0, 1].item() / 40_000
    assert share == pytest.approx(2 * (1 - norm.cdf(1.0)), abs=0.01)  # 0.317; sigma 0.9: 0.267


def test_votes_do_not_depend_on_how_images_share_a_forward_pass() -> None:
    for batch in (7, 64, 1000):
        counts = SmoothedClassifier(Constant(5), 10, 0.25, n=100, n0=10, batch=batch).counts(
            images(3), 100
        )
        assert counts[:, 5].tolist() == [100, 100, 100] and counts.sum().item() == 300


def test_certification_is_deterministic_under_a_seed_and_leaves_global_rng_alone() -> None:
    x = torch.full((2, 1, 4, 4), 0.5)

    def run(seed: int) -> torch.Tensor:
        smoothed = SmoothedClassifier(FarPixel(), 10, sigma=1.0, n=200, n0=20, batch=128, seed=seed)
        return smoothed.counts(x, 200)

    state = torch.get_rng_state()
    first, again, other = run(1), run(1), run(2)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)  # its votes depend on the noise
    torch.manual_seed(0)
    net = SmallCNN(channels=(4, 8), hidden=16)
    a, b = (SmoothedClassifier(net, 10, 2.0, n=300, n0=20, seed=1).certify(images(2)) for _ in "ab")
    assert torch.equal(a.prediction, b.prediction) and torch.equal(a.p_lower, b.p_lower)


def test_certify_works_for_cifar10_shapes_and_restores_training_mode() -> None:
    torch.manual_seed(0)
    net = PreActResNet18(num_classes=10, width=16).train()
    smoothed = SmoothedClassifier(net, 10, sigma=0.25, n=16, n0=2, batch=16)
    found = smoothed.certify(images(2, (3, 32, 32)))
    assert found.prediction.shape == found.radius.shape == (2,)
    assert ((found.prediction >= ABSTAIN) & (found.prediction < 10)).all()
    assert ((found.radius >= 0) & (found.radius <= smoothed.radius_cap + 1e-9)).all()
    assert net.training  # BatchNorm ran in eval mode and the mode came back


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"sigma": 0.0}, r"^smoothing.sigma must be > 0 \(the noise's standard deviation\), got 0"),
        ({"sigma": -0.5}, r"^smoothing.sigma must be > 0"),
        ({"n": 10, "n0": 100}, r"^smoothing.n0=100 > smoothing.n=10: the selection draws"),
        ({"alpha": 0.0}, r"^smoothing.alpha must be in \(0, 1\)"),
        ({"alpha": 1.0}, r"^smoothing.alpha must be in \(0, 1\)"),
        ({"batch": 0}, r"^smoothing.batch must be an integer >= 1, got 0"),
        ({"n": 2.5}, r"^smoothing.n must be an integer >= 1, got 2.5"),
        ({"n": 9, "n0": 9}, r"^smoothing.n=9 is too small to certify anything at alpha=0.001"),
    ],
)
def test_bad_knobs_are_one_line_errors(knobs: dict, message: str) -> None:
    settings = {"sigma": 0.25, "n": 1000, "n0": 100, "alpha": 0.001, "batch": 100, **knobs}
    with pytest.raises(ConfigError, match=message) as caught:
        SmoothedClassifier(Constant(), 10, **settings)
    assert "\n" not in str(caught.value)


def test_a_base_with_other_than_num_classes_logits_is_refused() -> None:
    smoothed = SmoothedClassifier(Constant(3, num_classes=12), 10, sigma=0.25, n=10, n0=2)
    with pytest.raises(ConfigError, match=r"^smoothing: the base classifier returns 12 logits, no"):
        smoothed.certify(images(1))


# ---- EOT-PGD on the smoothed classifier -------------------------------------------------------
def test_smoothed_pgd_stays_in_the_l2_ball_and_lowers_the_smoothed_probability() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    x, y = images(8), torch.arange(8)
    attack = SmoothedPGD(net, sigma=0.25, eps=1.0, steps=10, noise_draws=16)
    x_adv = attack(x, y)
    assert ((x_adv - x).flatten(1).norm(dim=1) <= 1.0 + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    x_random = (x + direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
    generator = torch.Generator()
    before, random, after = (attack._loss(z, y, generator.manual_seed(5)).item()
                             for z in (x, x_random, x_adv))  # fmt: skip
    assert after > 1.5 * before and after > 1.5 * random
    assert torch.equal(SmoothedPGD(net, 0.25, eps=0.0)(x, y), x)


def test_smoothed_pgd_cannot_move_a_model_that_ignores_its_input() -> None:
    smoothed = SmoothedClassifier(Constant(3), 10, sigma=0.25, n=200, n0=10)
    x_adv = SmoothedPGD(Constant(3), sigma=0.25, eps=2.0, steps=3)(images(2), torch.tensor([3, 3]))
    assert smoothed.predict(x_adv).tolist() == [3, 3]
