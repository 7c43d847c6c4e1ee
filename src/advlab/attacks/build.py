"""Turn an `attack/*.yaml` config into a torchattacks attack bound to a model."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import hydra
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from torch import nn

from advlab.errors import ConfigError

L2_TARGET_SUFFIXES = ("L2",)


def as_plain_dict(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """Resolved plain dict: safe to store in checkpoints and to pass to hydra.utils.instantiate."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def attack_norm(cfg: Mapping[str, Any] | DictConfig) -> str:
    """'Linf' or 'L2': from the config's `norm`, else from the class name (PGDL2 -> L2)."""
    cfg = as_plain_dict(cfg)
    if "norm" in cfg:
        return str(cfg["norm"])
    return "L2" if str(cfg.get("_target_", "")).endswith(L2_TARGET_SUFFIXES) else "Linf"


def validate_attack_config(
    cfg: Mapping[str, Any] | DictConfig, where: str = "attack"
) -> dict[str, Any]:
    """Check a config before any model exists; returns it as a plain dict."""
    cfg = as_plain_dict(cfg)
    target = cfg.get("_target_")
    if not target:
        raise ConfigError(f"{where} has no _target_ (expected e.g. torchattacks.PGD); got {cfg}")
    if getattr(attack_class(cfg), "training_only", False) and not where.endswith("train_attack"):
        raise ConfigError(
            f"{where}: {target} is a training attack only (it does not search for adversarial "
            f"examples on its own); it cannot measure robust accuracy"
        )
    norm = attack_norm(cfg)
    if norm not in ("Linf", "L2"):
        raise ConfigError(f"{where}.norm={norm!r} is not one of Linf, L2")
    if "eps" in cfg:
        eps = cfg["eps"]
        if not isinstance(eps, (int, float)) or isinstance(eps, bool):
            raise ConfigError(f"{where}.eps={eps!r} is not a number")
        if norm == "Linf" and not 0 < eps <= 1:
            raise ConfigError(
                f"{where}.eps={eps} is outside (0, 1]: Linf budgets are in pixel units of [0, 1] "
                f"images (MNIST 0.3, CIFAR-10 8/255≈0.0314)"
            )
        if norm == "L2" and not eps > 0:
            raise ConfigError(f"{where}.eps={eps} must be > 0 for an L2 attack")
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
    cfg: Mapping[str, Any] | DictConfig, model: nn.Module, where: str = "attack"
) -> Any:
    """Instantiate the attack of `cfg` (a `_target_` + its arguments) against `model`.

    The model must take [0, 1] images and normalize inside, so no normalization is set on the
    attack. torchattacks puts the model in eval mode during the attack and takes gradients with
    respect to the inputs only.
    """
    cfg = validate_attack_config(cfg, where)
    try:
        attack = hydra.utils.instantiate(cfg, model)
    except MissingMandatoryValue as err:  # a `???` left in the config (attack/advgan's ckpt_path)
        raise ConfigError(
            f"{where}.{err.full_key} is required (the attack config leaves it ???)"
        ) from None
    except InstantiationException as err:
        reason = " ".join(str(err).split())
        raise ConfigError(f"{where}: cannot build {cfg['_target_']}: {reason}") from err
    if not callable(attack):
        raise ConfigError(f"{where}: {cfg['_target_']} did not build a callable attack")
    return attack


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
