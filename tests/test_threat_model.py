"""One threat model, named by the data config: every attack of a run takes its budget from it."""

from __future__ import annotations

import pytest
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from advlab.errors import ConfigError
from advlab.evaluation.suite import parse_suite
from advlab.preflight import warn_off_threat_model
from advlab.threat_model import ThreatModel
from advlab.utils import instantiate

CIFAR_EPS = 8 / 255


def _budgets(node, at: str = "") -> dict[str, float]:
    """eps of every attack config (a mapping with `norm`) anywhere in a resolved config."""
    found = {}
    if isinstance(node, dict):
        if "norm" in node and "eps" in node:
            found[at] = node["eps"]
        for key, value in node.items():
            found.update(_budgets(value, f"{at}.{key}" if at else key))
    return found


def _compose(config: str, *overrides: str) -> dict:
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../configs"):
        cfg = compose(config, overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()
    HydraConfig.instance().set_config(cfg)  # run dirs resolve as they would in a run
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("method", ["pgd", "trades", "mart", "fgsm_rs", "free"])
def test_data_cifar10_alone_trains_and_validates_at_8_over_255(method: str) -> None:
    cfg = _compose("train", "data=cifar10", "model/net=preact_resnet18", f"method={method}")
    budgets = _budgets(cfg)
    assert {"model.method.attack", "model.val_attack", "model.test_attack"} <= set(budgets)
    assert any(at.startswith("callbacks.adversarial_eval") for at in budgets)
    assert budgets == pytest.approx(dict.fromkeys(budgets, CIFAR_EPS))
    epochs = parse_suite(cfg["callbacks"]["adversarial_eval"]["suite"])
    assert max(eps for entry in epochs for eps in entry.epsilons) == pytest.approx(CIFAR_EPS)


@pytest.mark.parametrize("attack", ["autoattack", "autoattack_fast", "apgd", "square", "pgd40"])
def test_data_cifar10_alone_evaluates_at_8_over_255(attack: str) -> None:
    cfg = _compose("eval", "data=cifar10", f"attack={attack}", "ckpt_path=x.ckpt")
    budgets = _budgets(cfg)
    assert "attack" in budgets and budgets == pytest.approx(dict.fromkeys(budgets, CIFAR_EPS))
    entries = parse_suite(cfg["suite"])
    largest = max(eps for entry in entries for eps in entry.epsilons)
    assert largest == pytest.approx(1.25 * CIFAR_EPS)  # the curve goes a little past the budget
    assert cfg["suite"]["eps"] == pytest.approx(CIFAR_EPS)


def test_an_override_off_the_threat_model_is_logged(compose_train, cifar_dir) -> None:
    cfg = compose_train("data=cifar10", "model/net=preact_resnet18", "model.test_attack.eps=0.3")
    model, data = instantiate(cfg.model), instantiate(cfg.data)
    warnings = warn_off_threat_model(model, data)
    assert warnings == [
        "model.test_attack attacks at Linf eps 0.3, not the data's threat model (Linf, eps "
        "0.03137): its numbers are not at the data's budget"
    ]


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"norm": "L1", "eps": 0.3}, r"data.threat_model.norm='L1' is not one of Linf, L2"),
        ({"norm": "Linf", "eps": 3}, r"data.threat_model.eps=3 is outside \(0, 1\]"),
        ({"norm": "Linf"}, r"data.threat_model must be \{norm: Linf\|L2, eps: <budget>\}"),
    ],
)
def test_a_bad_threat_model_is_one_line(cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ThreatModel.from_config(cfg)
