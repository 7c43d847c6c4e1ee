"""Turn an `attack/*.yaml` config into a torchattacks attack bound to a model."""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Mapping
from typing import Any

import hydra
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from torch import nn

from advlab.errors import ConfigError
from advlab.threat_model import check_budget, check_norm


def as_plain_dict(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """Resolved plain dict: safe to store in checkpoints and to pass to hydra.utils.instantiate."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def attack_norm(cfg: Mapping[str, Any] | DictConfig) -> str:
    """'Linf' or 'L2', as the attack config declares it (`norm:`)."""
    return str(as_plain_dict(cfg).get("norm"))


def attack_name(cfg: Mapping[str, Any] | DictConfig) -> str:
    """The short name metrics carry (`robust_acc_<name>`): the config's `name:`, else the class."""
    cfg = as_plain_dict(cfg)
    return str(cfg.get("name") or str(cfg.get("_target_", "attack")).rsplit(".", 1)[-1].lower())


def validate_attack_config(
    cfg: Mapping[str, Any] | DictConfig, where: str = "attack", training: bool = False
) -> dict[str, Any]:
    """Check a config before any model exists; returns it as a plain dict.

    `training`: the attack crafts training examples only, so a training-only attack (one that
    does not search on its own, e.g. attack/free) is allowed.
    """
    cfg = as_plain_dict(cfg)
    target = cfg.get("_target_")
    if not target:
        raise ConfigError(f"{where} has no _target_ (expected e.g. torchattacks.PGD); got {cfg}")
    if getattr(attack_class(cfg), "training_only", False) and not training:
        raise ConfigError(
            f"{where}: {target} is a training attack only (it does not search for adversarial "
            f"examples on its own); it cannot measure robust accuracy"
        )
    if "norm" not in cfg:
        raise ConfigError(
            f"{where} declares no norm: add `norm: Linf` (or L2) to its attack config"
        )
    norm = check_norm(cfg["norm"], f"{where}.norm")
    if "name" in cfg and not re.fullmatch(r"[a-z0-9_]+", str(cfg["name"])):
        raise ConfigError(f"{where}.name={cfg['name']!r} must be lowercase letters, digits or _")
    if "eps" in cfg:
        check_budget(cfg["eps"], norm, f"{where}.eps")
    return cfg


def attack_class(cfg: Mapping[str, Any] | DictConfig) -> type | None:
    """The class a config's `_target_` names, or None when it does not resolve (build_attack
    then reports why)."""
    module_name, _, name = str(as_plain_dict(cfg).get("_target_", "")).rpartition(".")
    try:  # not hydra.utils.get_class: it logs an error of its own for a bad target
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return found if isinstance(found, type) else None


def build_attack(
    cfg: Mapping[str, Any] | DictConfig,
    model: nn.Module,
    where: str = "attack",
    training: bool = False,
) -> Any:
    """Instantiate the attack of `cfg` (a `_target_` + its arguments) against `model`.

    The model must take [0, 1] images and normalize inside, so no normalization is set on the
    attack. torchattacks puts the model in eval mode during the attack and takes gradients with
    respect to the inputs only. `training`: see `validate_attack_config`.
    """
    return instantiate_attack(validate_attack_config(cfg, where, training), model, where)


def instantiate_attack(cfg: Mapping[str, Any], model: nn.Module, where: str = "attack") -> Any:
    """Build an already validated config against `model` (`build_attack` without the checks,
    for the eps-0 sanity run, whose budget they would refuse)."""
    # `name` and `norm` are declared for advlab; `norm` reaches the attacks that take it
    dropped = ("name",) if _accepts(attack_class(cfg), "norm") else ("name", "norm")
    cfg = {key: value for key, value in cfg.items() if key not in dropped}
    try:
        attack = hydra.utils.instantiate(cfg, model)
    except MissingMandatoryValue as err:  # a `???` left in the config (attack/advgan's ckpt_path)
        raise ConfigError(
            f"{where}.{err.full_key} is required (the attack config leaves it ???)"
        ) from None
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):  # the attack's own one-line message
            raise err.__cause__ from None
        reason = " ".join(str(err).split())
        raise ConfigError(f"{where}: cannot build {cfg['_target_']}: {reason}") from err
    if not callable(attack):
        raise ConfigError(f"{where}: {cfg['_target_']} did not build a callable attack")
    return attack


def _accepts(cls: type | None, name: str) -> bool:
    """Whether `cls(...)` takes a keyword `name` (True when unknown: let it say so itself)."""
    if cls is None:
        return True
    parameters = inspect.signature(cls).parameters
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def check_within_budget(
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    eps: float,
    norm: str = "Linf",
    tol: float = 1e-5,
) -> None:
    """Raise AssertionError unless x_adv is in [0, 1] and within `eps` of x in `norm`.

    Attacks project; this only checks, cheaply, so a broken attack fails loudly.
    """
    if adversarial.shape != clean.shape:
        raise AssertionError(
            f"adversarial shape {tuple(adversarial.shape)} != clean {tuple(clean.shape)}"
        )
    low, high = adversarial.min().item(), adversarial.max().item()
    if low < -tol or high > 1 + tol:
        raise AssertionError(f"adversarial images leave [0, 1]: min {low:.4g}, max {high:.4g}")
    delta = (adversarial - clean).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "Linf" else delta.norm(dim=1)
    worst = size.max().item()
    if worst > eps + tol:
        raise AssertionError(f"perturbation {norm} norm {worst:.6g} exceeds eps {eps:.6g}")
