"""The official AutoAttack wrapper: torchattacks' contract, the standard settings, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.attacks import check_within_budget
from advlab.attacks.autoattack import OfficialAutoAttack
from advlab.errors import ConfigError
from tests.conftest import REPO_ROOT


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def test_pyautoattack_is_a_declared_dependency() -> None:
    text = (REPO_ROOT / "pyproject.toml").read_text()  # no tomllib on Python 3.10
    dependencies = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert '"pyautoattack>=' in dependencies


def test_standard_version_runs_the_four_attacks_with_the_published_settings() -> None:
    attack = OfficialAutoAttack(tiny_net(), eps=0.3)._build(num_classes=10)
    assert attack.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert (attack.apgd.n_iter, attack.apgd.n_restarts) == (100, 1)
    assert attack.apgd_targeted.n_target_classes == attack.fab.n_target_classes == 9
    assert attack.square.n_queries == 5000


def test_custom_subset_gets_the_standard_settings() -> None:
    attack = OfficialAutoAttack(tiny_net(), version="custom", attacks=["apgd-ce", "apgd-t"])
    built = attack._build(num_classes=10)
    assert built.attacks_to_run == ["apgd-ce", "apgd-t"]
    assert (built.apgd.n_restarts, built.apgd_targeted.n_restarts) == (1, 1)
    assert built.apgd_targeted.n_target_classes == 9
    assert built.apgd.n_iter == built.apgd_targeted.n_iter == 100


def test_attack_follows_the_torchattacks_contract() -> None:
    net = tiny_net().train()
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x).argmax(dim=1)
    attack = OfficialAutoAttack(net, eps=0.1, version="custom", attacks=["apgd-ce"], steps=5)
    x_adv = attack(x, y)
    check_within_budget(x, x_adv, 0.1, "Linf")
    assert net.training  # mode restored
    assert (net.eval()(x_adv).argmax(dim=1) != y).any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": "fast"}, r"attack.version='fast' is not one of"),
        ({"version": "custom"}, r"version=custom needs attack.attacks"),
        ({"version": "custom", "attacks": ["apgd-x"]}, r"unknown \['apgd-x'\]"),
        ({"attacks": ["apgd-ce"]}, r"only used with version=custom"),
        ({"norm": "L1"}, r"attack.norm='L1' is not one of Linf, L2"),
    ],
)
def test_bad_settings_are_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        OfficialAutoAttack(tiny_net(), **kwargs)
