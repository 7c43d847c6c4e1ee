"""Models built to mask their gradients get the SUSPECT verdict (or an honest headline); an honest
model gets TRUSTWORTHY. Each masked model is an undefended classifier behind one trick."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlab.evaluation import SanitySettings, evaluate_robustness, parse_suite
from advlab.evaluation.masked_models import (
    NoisyInput,
    Probabilities,
    Quantized,
    ScaledLogits,
    SelfTraining,
)
from advlab.evaluation.suite import make_entry

EPS = 0.3
SUITE = {
    "eps": EPS,
    "eps_multiples": [0.0, 0.5, 1.0],
    "attacks": {
        "fgsm": {"attack": {"_target_": "torchattacks.FGSM", "norm": "Linf", "eps": EPS}},
        "pgd": {"attack": {"_target_": "torchattacks.PGD", "norm": "Linf", "eps": EPS,
                           "alpha": 0.075, "steps": 10, "random_start": True}},
        "square": {"attack": {"_target_": "torchattacks.Square", "norm": "Linf", "eps": EPS,
                              "n_queries": 100, "seed": 0}, "eps_multiples": [1.0]},
    },
}  # fmt: skip
AUTOATTACK = {"_target_": "advlab.attacks.autoattack.OfficialAutoAttack", "norm": "Linf",
              "eps": EPS, "seed": 0, "batch_size": 32, "steps": 5, "n_queries": 100}  # fmt: skip
FAST = {**AUTOATTACK, "version": "custom", "attacks": ["apgd-ce", "apgd-t"]}
SETTINGS = SanitySettings(steps_factor=2, tolerance=0.04)  # 32 images: 1 image = 3.1%


@pytest.fixture(scope="module")
def data_and_net() -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    """An undefended MLP that gets a toy 10-class problem right (one pattern per class)."""
    generator = torch.Generator().manual_seed(0)
    patterns = torch.rand(10, 1, 12, 12, generator=generator)
    y = torch.randint(0, 10, (32,), generator=generator)
    x = (0.7 * patterns[y] + 0.3 * torch.rand(32, 1, 12, 12, generator=generator)).clamp(0, 1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(144, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        train_x = (0.7 * patterns[y] + 0.3 * torch.rand_like(x)).clamp(0, 1)
        loss = F.cross_entropy(net(train_x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return x, y, net.eval()


def report_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor, headline: dict = FAST):
    torch.manual_seed(0)
    entries = [*parse_suite(SUITE), make_entry("headline", headline, [EPS], "attack")]
    return evaluate_robustness(model, [(x, y)], entries, SETTINGS, budget=EPS, headline="headline")


def failed(report) -> set[str]:
    return {check.name for check in report.failed_checks}


def test_an_honest_undefended_model_is_trustworthy_and_broken(data_and_net) -> None:
    x, y, net = data_and_net
    report = report_of(net, x, y)
    assert report.clean_acc == 1.0
    assert report.verdict == "TRUSTWORTHY", report.verdict
    assert report.headline.robust_acc <= 0.05


@pytest.mark.parametrize(
    ("wrapper", "flag"),
    [
        (Quantized, "input gradients do not vanish"),
        (NoisyInput, "the model is deterministic (no test-time randomness)"),
        (Probabilities, "the model returns logits, not probabilities"),
        (SelfTraining, "attacking the model changes neither its mode nor its buffers"),
    ],
)
def test_a_masked_model_is_suspect_and_says_why(data_and_net, wrapper, flag: str) -> None:
    x, y, net = data_and_net
    report = report_of(wrapper(net), x, y)
    assert report.verdict.startswith("SUSPECT: ")
    assert flag in failed(report) and flag in report.verdict


def test_scaled_logits_are_flagged_or_scored_honestly(data_and_net) -> None:
    """True robust accuracy: the same attack on the unscaled network (argmax is unchanged)."""
    x, y, net = data_and_net
    report = report_of(ScaledLogits(net), x, y)
    true_acc = report_of(net, x, y).headline.robust_acc
    honest = abs(report.headline.robust_acc - true_acc) <= 0.02
    assert report.verdict.startswith("SUSPECT") or honest, (report.verdict, true_acc)


def test_a_randomized_model_gets_autoattacks_eot_version_and_the_report_says_so(
    data_and_net,
) -> None:
    x, y, net = data_and_net
    report = report_of(NoisyInput(net), x, y)
    assert report.headline.label == "AutoAttack (rand)"
    assert any("rand version" in note for note in report.notes)


def test_squares_win_is_seen_even_when_the_headline_contains_square(data_and_net) -> None:
    """Standard AutoAttack includes Square: the masking check must not compare Square with it."""
    x, y, net = data_and_net
    report = report_of(Quantized(net), x, y, headline={**AUTOATTACK, "version": "standard"})
    masking = next(c for c in report.checks if c.name.startswith("gradient-free attack"))
    assert masking.status == "fail", masking.detail
    assert "headline" not in masking.numbers["compared_with"]
    assert "pgd@0.3" in masking.numbers["beaten"]
    pgd = next(r for r in report.results if r.attack == "pgd" and r.eps == EPS)
    assert not pgd.trusted


def test_autoattacks_own_warnings_become_checks(data_and_net) -> None:
    x, y, net = data_and_net
    report = report_of(Probabilities(net), x, y)
    flags = [c for c in report.checks if c.name.startswith("AutoAttack: ")]
    assert any("probability distribution" in c.name for c in flags), [c.name for c in flags]
    assert all(c.failed for c in flags)
