"""Scores of one set of adversarial examples against several classifiers (white-box and transfer)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from advlab.evaluation.measure import AttackOutcome, AttackStats

#: trainer.strategy.all_gather: a tensor per process -> the tensors of all processes
Gather = Callable[[torch.Tensor], torch.Tensor]


class JudgeTally:
    """Per classifier ("judge"): `AttackStats` of the adversarial examples it was shown, and for
    a targeted attack how many of them it puts in `target_class`.

    Kept as sums, so batches and DDP ranks combine exactly; every process must hold the same
    judge names in the same order (the reduction is one collective per judge).

    Args:
        names: the judges, e.g. the attacked classifier first, then transfer classifiers.
        target_class: the class a targeted attack aims for; None for an untargeted one.
    """

    def __init__(self, names: Sequence[str], target_class: int | None = None) -> None:
        self.names = list(names)
        self.target_class = target_class
        self.stats = {name: AttackStats() for name in self.names}
        # (images now in target_class, images not of target_class to begin with)
        self.targeted = {name: torch.zeros(2, dtype=torch.float64) for name in self.names}

    def add(self, name: str, outcome: AttackOutcome) -> None:
        self.stats[name] = self.stats[name].add(outcome.stats)
        if self.target_class is not None:
            eligible = outcome.y != self.target_class
            hits = eligible & (outcome.pred_adv == self.target_class)
            self.targeted[name] += torch.tensor([float(hits.sum()), float(eligible.sum())],
                                                dtype=torch.float64)  # fmt: skip

    def reduce(self, gather: Gather, device: torch.device | str) -> dict[str, dict[str, float]]:
        """judge -> `AttackStats.summary()` over all processes (+ `targeted_success_rate`: share
        of the images not already of the target class that the attack put there)."""
        summaries = {}
        for name in self.names:
            total = AttackStats.reduce(gather(self.stats[name].to_tensor(device)))
            summary = total.summary()
            if self.target_class is not None:
                hits, eligible = gather(self.targeted[name].to(device)).reshape(-1, 2).sum(dim=0)
                summary["targeted_success_rate"] = (
                    float(hits / eligible) if eligible > 0 else float("nan")
                )
            summaries[name] = summary
        return summaries
