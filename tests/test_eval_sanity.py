"""Each sanity check passes on a normal model and fails on a model built to fail it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.evaluation import SanitySettings, evaluate_robustness, parse_suite
from advlab.evaluation.sanity import (
    FAIL,
    PASS,
    SKIP,
    accuracy_does_not_rise_with_eps,
    eps_zero_equals_clean,
    gradient_free_does_not_win,
    iterative_beats_single_step,
    large_eps_reaches_chance,
    more_steps_do_not_help,
)

SUITE = {
    "epsilons": [0.0, 0.05, 0.1, 0.3],
    "attacks": {
        "fgsm": {"attack": {"_target_": "torchattacks.FGSM", "norm": "Linf", "eps": 0.3}},
        "pgd": {"attack": {"_target_": "torchattacks.PGD", "norm": "Linf", "eps": 0.3, "alpha": 0.075,
                           "steps": 10, "random_start": True}},
        "square": {"attack": {"_target_": "torchattacks.Square", "norm": "Linf", "eps": 0.3, "n_queries": 30,
                              "seed": 0}, "epsilons": [0.3]},
    },
}  # fmt: skip
SETTINGS = SanitySettings(steps_factor=3, tolerance=0.04)  # 64 images: 1 image = 1.6%
NAMES = {
    "eps0": "accuracy at eps 0 equals clean accuracy",
    "monotone": "accuracy does not rise with eps",
    "large": "a very large eps drives accuracy to chance",
    "steps": "more attack steps do not help the model",
    "iterative": "iterative attack beats single-step",
    "masking": "gradient-free attack does not beat gradient attacks (gradient masking)",
}


class _FlipGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


class FlippedGradients(nn.Module):
    """Same predictions, gradients pointing the wrong way: attacks make it *more* correct."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(_FlipGradient.apply(x))


class GradientsTurnAround(nn.Module):
    """Honest gradients for the first `after` queries of an attack, then reversed ones.

    A stand-in for defenses that adapt to the attacker: the attack's later steps undo its
    earlier ones. Counting restarts at every forward pass without gradients (an evaluation).
    """

    def __init__(self, net: nn.Module, after: int) -> None:
        super().__init__()
        self.net, self.after, self.calls = net, after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            self.calls = 0
            return self.net(x)
        self.calls += 1
        return self.net(_FlipGradient.apply(x) if self.calls > self.after else x)


class MaskedGradients(nn.Module):
    """Quantized input: gradients are exactly zero, so only a gradient-free attack gets through."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 4) / 4)


class Randomized(nn.Module):
    """Noise on the logits: two evaluations of one image disagree."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        return logits + 3 * logits.std() * torch.randn_like(logits)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def own_labels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


def statuses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: float = 0.3) -> dict:
    torch.manual_seed(0)
    report = evaluate_robustness(model, [(x, y)], parse_suite(SUITE), SETTINGS, budget=budget)
    by_name = {check.name: check.status for check in report.checks}
    return {key: by_name[name] for key, name in NAMES.items()}


def test_a_normal_model_passes_every_check(images: torch.Tensor) -> None:
    net = tiny_net()
    assert statuses(net, images, own_labels(net, images)) == dict.fromkeys(NAMES, PASS)


def test_a_randomized_model_fails_eps_zero(images: torch.Tensor) -> None:
    model = Randomized(tiny_net())
    assert statuses(model, images, own_labels(tiny_net(), images))["eps0"] == FAIL


def test_zero_gradients_fail_the_masking_and_large_eps_checks(images: torch.Tensor) -> None:
    model = MaskedGradients(tiny_net())
    result = statuses(model, images, own_labels(model, images))
    assert (result["masking"], result["large"]) == (FAIL, FAIL)
    assert result["eps0"] == PASS


def test_wrong_way_gradients_make_accuracy_rise_with_eps(images: torch.Tensor) -> None:
    model = FlippedGradients(tiny_net())
    with torch.no_grad():  # half the labels are the runner-up class: reachable by "attacking"
        labels = model(images).topk(2, dim=1).indices
    y = torch.where(torch.arange(len(images)) % 2 == 0, labels[:, 1], labels[:, 0])
    result = statuses(model, images, y)
    assert (result["monotone"], result["large"]) == (FAIL, FAIL)
    assert result["eps0"] == PASS


def test_gradients_that_turn_after_10_queries_fail_more_steps(images: torch.Tensor) -> None:
    model = GradientsTurnAround(tiny_net(), after=10)  # PGD-10 works, PGD-30 undoes itself
    result = statuses(model, images, own_labels(model, images), budget=0.1)
    assert result["steps"] == FAIL
    assert (result["monotone"], result["large"]) == (PASS, PASS)


def test_gradients_that_turn_after_one_query_fail_single_step(images: torch.Tensor) -> None:
    model = GradientsTurnAround(tiny_net(), after=1)  # FGSM works, PGD walks back
    assert statuses(model, images, own_labels(model, images))["iterative"] == FAIL


def test_checks_without_their_runs_are_skipped_not_passed() -> None:
    assert eps_zero_equals_clean({"pgd": {0.3: 0.5}}, 0.9).status == SKIP
    assert accuracy_does_not_rise_with_eps({"pgd": {0.3: 0.5}}, 0.01).status == SKIP
    assert large_eps_reaches_chance("pgd", 1.0, None, 10, 0.05).status == SKIP
    assert more_steps_do_not_help("pgd", 0.3, 10, 0.5, 50, None, 0.01).status == SKIP
    assert iterative_beats_single_step({"pgd": {0.3: 0.5}}, "pgd", "fgsm", 0.01).status == SKIP
    assert gradient_free_does_not_win({"pgd": {0.3: 0.5}}, "square", 0.02).status == SKIP


def test_tolerances_are_what_the_settings_say() -> None:
    acc = {"pgd": {0.1: 0.50, 0.2: 0.509}, "square": {0.2: 0.49}}
    assert accuracy_does_not_rise_with_eps(acc, 0.01).status == PASS
    assert accuracy_does_not_rise_with_eps(acc, 0.005).status == FAIL
    assert gradient_free_does_not_win(acc, "square", 0.02).status == PASS
    assert gradient_free_does_not_win(acc, "square", 0.01).status == FAIL
    weak_and_strong = {"fgsm": {0.3: 0.60}, "pgd": {0.3: 0.20}, "square": {0.3: 0.40}}
    assert gradient_free_does_not_win(weak_and_strong, "square", 0.02).status == PASS  # FGSM only
    assert large_eps_reaches_chance("pgd", 1.0, 0.149, 10, 0.05).status == PASS
    assert large_eps_reaches_chance("pgd", 1.0, 0.151, 10, 0.05).status == FAIL
    assert more_steps_do_not_help("pgd", 0.3, 10, 0.5, 50, 0.52, 0.01).status == FAIL
    assert "not converged" in more_steps_do_not_help("pgd", 0.3, 10, 0.5, 50, 0.4, 0.01).detail


def test_autoattack_repeating_a_warning_per_stage_gives_one_failed_check() -> None:
    from advlab.evaluation.robustness import _flags
    from advlab.evaluation.sanity import FAIL

    zero = "there are {} points with zero gradient! This might lead to unreliable evaluation."
    warnings = {
        zero.format(93): ["headline@0.3"],
        zero.format(84): ["headline@0.3", "apgd@0.3"],
        "it seems to be a randomized defense!": ["headline@0.3"],
    }
    checks = _flags(warnings)
    assert [check.name for check in checks] == [
        "AutoAttack: " + zero.format("84-93"),
        "AutoAttack: it seems to be a randomized defense!",
    ]
    assert checks[0].detail == "raised by headline@0.3, apgd@0.3"
    assert {check.status for check in checks} == {FAIL}
