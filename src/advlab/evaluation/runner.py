"""Run an attack over a list of batches: the loop shared by the per-epoch callback and eval.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from advlab.attacks import attack_norm
from advlab.evaluation.measure import AttackOutcome, AttackStats, attack_batch
from advlab.evaluation.suite import build_attack_at

Batch = tuple[torch.Tensor, torch.Tensor]


def run_attack(
    model: nn.Module,
    cfg: Mapping[str, Any],
    eps: float,
    batches: Sequence[Batch],
    where: str = "attack",
    on_batch: Callable[[AttackOutcome], None] | None = None,
    clean_predictions: Sequence[torch.Tensor] | None = None,
    attack: Any = None,
) -> AttackStats:
    """Attack every batch with `cfg` at `eps`; `on_batch` sees each outcome (grids, saving).

    `clean_predictions` (from `predict`) spares one forward pass per batch and run; `attack`,
    when given, is `cfg` already built at `eps` (to read what it recorded afterwards).
    """
    if attack is None:
        attack = build_attack_at(cfg, model, eps, where=where)
    norm = attack_norm(cfg)
    total = AttackStats()
    for i, (x, y) in enumerate(batches):
        known = clean_predictions[i] if clean_predictions is not None else None
        outcome = attack_batch(model, attack, x, y, eps, norm, where=where, pred_clean=known)
        total = total.add(outcome.stats)
        if on_batch is not None:
            on_batch(outcome)
    return total


def predict(model: nn.Module, batches: Sequence[Batch]) -> list[torch.Tensor]:
    """The model's classes for unattacked batches, in eval mode (its mode restored after)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.no_grad():
            return [model(x).argmax(dim=1) for x, _ in batches]
    finally:
        model.train(was_training)
