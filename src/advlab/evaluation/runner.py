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
) -> AttackStats:
    """Attack every batch with `cfg` at `eps`; `on_batch` sees each outcome (grids, saving)."""
    attack = build_attack_at(cfg, model, eps, where=where)
    norm = attack_norm(cfg)
    total = AttackStats()
    for x, y in batches:
        outcome = attack_batch(model, attack, x, y, eps, norm, where=where)
        total = total.add(outcome.stats)
        if on_batch is not None:
            on_batch(outcome)
    return total


def clean_accuracy(model: nn.Module, batches: Sequence[Batch]) -> tuple[float, float]:
    """(correct, count) of the model on unattacked batches, in eval mode."""
    was_training = model.training
    model.eval()
    correct = count = 0.0
    try:
        with torch.no_grad():
            for x, y in batches:
                correct += float((model(x).argmax(dim=1) == y).sum())
                count += len(y)
    finally:
        model.train(was_training)
    return correct, count
