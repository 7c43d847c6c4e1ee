"""Attacks built from attack/ configs stay inside their budget and [0, 1]; bad configs are refused."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize
from omegaconf import OmegaConf

from advlab.attacks import EpsilonSchedule, attack_norm, build_attack, check_within_budget
from advlab.errors import ConfigError
from advlab.nets import SmallCNN
from tests.conftest import config_options

# CW is unbounded by design; N-FGSM is a training augmentation reaching (noise_scale + 1) * eps
UNBOUNDED = ("cw", "nfgsm")
# a trained generator's checkpoint is needed: tests/test_advgan.py checks its budget
NEEDS_CHECKPOINT = ("advgan",)
# moved by the training loop only: tests/test_free_at.py checks its budget
TRAINING_ONLY = ("free",)
BOUNDED = [
    name
    for name in config_options("attack")
    if name not in UNBOUNDED + NEEDS_CHECKPOINT + TRAINING_ONLY
]


def attack_config(name: str, **overrides) -> dict:
    with initialize(version_base="1.3", config_path="../configs/attack"):
        cfg = OmegaConf.to_container(compose(name), resolve=True)
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
    with pytest.raises(ConfigError, match=rf"attack.eps={eps} is outside \(0, 1\]"):
        build_attack(attack_config("pgd", eps=eps), SmallCNN())


def test_l2_epsilon_may_exceed_one() -> None:
    assert build_attack(attack_config("pgdl2", eps=2.0), SmallCNN()) is not None
    with pytest.raises(ConfigError, match="must be > 0"):
        build_attack(attack_config("pgdl2", eps=0.0), SmallCNN())


def test_unknown_attack_class_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"cannot build torchattacks.PDG"):
        build_attack({"_target_": "torchattacks.PDG", "eps": 0.3}, SmallCNN())


def test_epsilon_schedule_ramps_eps_and_alpha() -> None:
    attack = build_attack(attack_config("pgd", eps=0.3, alpha=0.03), SmallCNN())
    schedule = EpsilonSchedule(attack, warmup_epochs=2)
    assert schedule.update(0.5) == pytest.approx(0.25)
    assert (attack.eps, attack.alpha) == pytest.approx((0.075, 0.0075))
    schedule.update(5.0)
    assert (attack.eps, attack.alpha) == pytest.approx((0.3, 0.03))


def test_nfgsm_reaches_beyond_eps_by_noise_plus_step_only(net_and_batch) -> None:
    net, x, y = net_and_batch
    torch.manual_seed(0)
    cfg = attack_config("nfgsm", eps=0.1, alpha=0.1, noise_scale=2.0)
    x_adv = build_attack(cfg, net)(x, y)
    reach = (x_adv - x).abs().max().item()
    assert 0.1 < reach <= 0.3 + 1e-6  # no projection: beyond eps, within (2 + 1) * eps
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_nfgsm_clip_scale_projects_to_the_ball(net_and_batch) -> None:
    net, x, y = net_and_batch
    cfg = attack_config("nfgsm", eps=0.1, alpha=0.1, noise_scale=2.0, clip_scale=1.0)
    check_within_budget(x, build_attack(cfg, net)(x, y), 0.1, "Linf")


def test_nfgsm_step_raises_the_loss_over_noise_alone(net_and_batch) -> None:
    net, x, y = net_and_batch
    cfg = attack_config("nfgsm", eps=0.05, alpha=0.05, noise_scale=1.0)
    attack = build_attack(cfg, net)
    torch.manual_seed(0)
    x_adv = attack(x, y)
    torch.manual_seed(0)
    x_noise = build_attack({**cfg, "alpha": 0.0}, net)(x, y)  # same noise, no gradient step
    with torch.no_grad():
        loss_adv = torch.nn.functional.cross_entropy(net(x_adv), y).item()
        loss_noise = torch.nn.functional.cross_entropy(net(x_noise), y).item()
    assert loss_adv > loss_noise
