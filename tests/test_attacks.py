"""Attacks built from attack/ configs stay inside their budget and [0, 1]; bad configs are refused."""

from __future__ import annotations

import pytest
import torch

from advlab.attacks import EpsilonSchedule, attack_norm, build_attack, check_within_budget
from advlab.errors import ConfigError
from advlab.nets import SmallCNN
from tests.conftest import attack_config as composed_attack
from tests.conftest import config_options

# CW is unbounded by design
UNBOUNDED = ("cw",)
# a trained generator's checkpoint is needed: tests/test_advgan.py checks its budget
NEEDS_CHECKPOINT = ("advgan",)
# moved by the training loop only: tests/test_free_at.py checks its budget
TRAINING_ONLY = ("free",)
BOUNDED = [
    name
    for name in config_options("attack")
    if name not in UNBOUNDED + NEEDS_CHECKPOINT + TRAINING_ONLY
]


def attack_config(name: str, data: str = "mnist", **overrides) -> dict:
    cfg = composed_attack(name, data)
    for key in ("steps", "n_queries"):  # keep CPU time small; the budget logic is unchanged
        if key in cfg:
            cfg[key] = min(cfg[key], 5 if key == "steps" else 200)
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def net_and_batch():
    torch.manual_seed(0)
    net = SmallCNN(channels=(8, 16), hidden=32).eval()
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():  # labels the net gets right, so every attack has work to do
        y = net(x).argmax(dim=1)
    return net, x, y


@pytest.mark.parametrize("name", BOUNDED)
def test_attack_stays_in_epsilon_ball_and_unit_box(net_and_batch, name: str) -> None:
    net, x, y = net_and_batch
    cfg = attack_config(name)
    attack = build_attack(cfg, net)
    x_adv = attack(x, y)
    check_within_budget(x, x_adv, cfg["eps"], attack_norm(cfg))
    assert (x_adv - x).abs().max().item() > 0.0


def test_cw_stays_in_unit_box(net_and_batch) -> None:
    net, x, y = net_and_batch
    x_adv = build_attack(attack_config("cw", steps=5), net)(x, y)
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_attack_does_not_touch_parameter_gradients_or_mode() -> None:
    net = SmallCNN(channels=(8, 16), hidden=32).train()
    attack = build_attack(attack_config("pgd"), net)
    attack(torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,)))
    assert all(p.grad is None for p in net.parameters())
    assert net.training


def test_check_within_budget_catches_violations() -> None:
    x = torch.full((2, 1, 4, 4), 0.5)
    with pytest.raises(AssertionError, match="exceeds eps"):
        check_within_budget(x, x + 0.2, eps=0.1)
    with pytest.raises(AssertionError, match=r"leave \[0, 1\]"):
        check_within_budget(x, x + 0.6, eps=1.0)
    with pytest.raises(AssertionError, match="L2 norm"):
        check_within_budget(x, x + 0.05, eps=0.1, norm="L2")  # L2 of 16 x 0.05 = 0.2
    check_within_budget(x, x + 0.05, eps=0.05 + 1e-7)


@pytest.mark.parametrize("eps", [0.0, -0.1, 1.5])
def test_linf_epsilon_outside_unit_interval_is_refused(eps: float) -> None:
    with pytest.raises(ConfigError, match=rf"attack.eps={eps:g} is outside \(0, 1\]"):
        build_attack(attack_config("pgd", eps=eps), SmallCNN())


def test_l2_epsilon_may_exceed_one() -> None:
    assert build_attack(attack_config("pgdl2", eps=2.0), SmallCNN()) is not None
    with pytest.raises(ConfigError, match="must be > 0"):
        build_attack(attack_config("pgdl2", eps=0.0), SmallCNN())


def test_unknown_attack_class_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"cannot build torchattacks.PDG"):
        build_attack({"_target_": "torchattacks.PDG", "norm": "Linf", "eps": 0.3}, SmallCNN())


@pytest.mark.parametrize("name", config_options("attack"))
def test_every_attack_config_declares_its_norm(name: str) -> None:
    assert composed_attack(name)["norm"] in ("Linf", "L2")


def test_an_attack_without_a_declared_norm_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"attack declares no norm: add `norm: Linf`"):
        build_attack({"_target_": "torchattacks.PGDL2", "eps": 2.0}, SmallCNN())


def test_the_declared_norm_decides_the_budget_check_not_the_class_name() -> None:
    # an L2 attack whose class name does not end in L2 keeps its L2 radius above 1
    cfg = attack_config("apgd", norm="L2", eps=1.5, steps=2)
    net = SmallCNN(channels=(8, 16), hidden=32).eval()
    x = torch.rand(3, 1, 28, 28)
    x_adv = build_attack(cfg, net)(x, net(x).argmax(dim=1))
    check_within_budget(x, x_adv, 1.5, "L2")


@pytest.mark.parametrize("data, eps", [("mnist", 0.3), ("cifar10", 8 / 255)])
def test_budgets_and_step_sizes_follow_the_data_threat_model(data: str, eps: float) -> None:
    assert attack_config("pgd", data)["eps"] == pytest.approx(eps)
    assert attack_config("pgd", data)["alpha"] == pytest.approx(eps / 4)
    assert attack_config("pgd40", data)["alpha"] == pytest.approx(eps / 30)
    assert attack_config("ffgsm", data)["alpha"] == pytest.approx(1.25 * eps)


def test_epsilon_schedule_ramps_eps_and_alpha() -> None:
    attack = build_attack(attack_config("pgd", eps=0.3, alpha=0.03), SmallCNN())
    schedule = EpsilonSchedule(attack, warmup_epochs=2)
    assert schedule.update(0.5) == pytest.approx(0.25)
    assert (attack.eps, attack.alpha) == pytest.approx((0.075, 0.0075))
    schedule.update(5.0)
    assert (attack.eps, attack.alpha) == pytest.approx((0.3, 0.03))
