"""Free adversarial training (Shafahi et al. 2019): its settings check and one batch of it,
under manual optimization.

Kept apart from `RobustClassifier` because it owns the optimizer loop: free AT takes
`replays` optimizer steps per batch, each from the one forward/backward pass that also moves
the perturbation (`advlab.attacks.free.FreePerturbation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from omegaconf import DictConfig

from advlab.attacks.build import as_plain_dict, attack_class
from advlab.attacks.free import FreePerturbation
from advlab.errors import ConfigError


def check_free_settings(
    method: str,
    train_attack: Mapping[str, Any] | DictConfig | None,
    free_replays: int,
    linearity_weight: float,
) -> None:
    """Free AT and its perturbation only make sense together (attack/free steps only when
    method=free drives it); refuse the mismatches before any training."""
    if isinstance(free_replays, bool) or not isinstance(free_replays, int) or free_replays < 1:
        raise ConfigError(f"model.free_replays must be an integer >= 1, got {free_replays!r}")
    cls = attack_class(train_attack) if train_attack is not None else None
    is_free_attack = cls is not None and issubclass(cls, FreePerturbation)
    if method == "free" and not is_free_attack:
        target = None if train_attack is None else as_plain_dict(train_attack).get("_target_")
        raise ConfigError(
            f"model.method=free needs attack/free as model.train_attack "
            f"(attack@model.train_attack=free), got {target}"
        )
    if method not in ("free", "clean") and is_free_attack:
        raise ConfigError(
            f"attack/free only moves under model.method=free; model.method={method} needs an "
            f"attack that computes its own gradients (e.g. attack@model.train_attack=ffgsm)"
        )
    if method == "free" and linearity_weight > 0:
        raise ConfigError("model.linearity_weight applies to pgd, fgsm_rs and nfgsm, not free")


def free_adversarial_step(
    module: LightningModule,
    perturbation: FreePerturbation,
    x: torch.Tensor,
    y: torch.Tensor,
    replays: int,
    step_scheduler: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replay (x, y) `replays` times; returns the last replay's loss and logits (detached).

    Each replay: logits on x + delta, one backward pass that fills the weights' gradients and
    the input gradient, one optimizer step, one signed step of delta. `step_scheduler` steps the
    LR scheduler after every optimizer step (a per-step schedule counts replays, not batches).
    """
    optimizer = module.optimizers()
    scheduler = module.lr_schedulers() if step_scheduler else None
    for _ in range(replays):
        x_adv = perturbation(x, y).requires_grad_(True)
        logits = module(x_adv)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        module.manual_backward(loss)
        perturbation.step(x, x_adv, x_adv.grad)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return loss.detach(), logits.detach()
