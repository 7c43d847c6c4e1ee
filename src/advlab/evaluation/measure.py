"""Run one attack on one batch and count what happened, in sums that add up across batches/ranks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch
from torch import nn

from advlab.attacks import check_within_budget
from advlab.errors import AdvlabError

Attack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class AttackFailedError(AdvlabError):
    """An attack returned something that is not an adversarial example (NaN, out of budget)."""


#: fields combined with max; all others are sums
MAX_FIELDS = ("linf_max", "l2_max")


@dataclass
class AttackStats:
    """Counts and perturbation sizes of one attack at one epsilon.

    Kept as sums (not rates) so batches and DDP ranks combine exactly: the reduced accuracy is
    sum(correct) / sum(count), whatever the shard sizes.
    """

    count: float = 0.0
    clean_correct: float = 0.0
    robust_correct: float = 0.0
    fooled: float = 0.0  # clean-correct images the attack turned wrong
    linf_sum: float = 0.0
    l2_sum: float = 0.0
    linf_max: float = 0.0
    l2_max: float = 0.0
    seconds: float = 0.0

    def add(self, other: AttackStats) -> AttackStats:
        """Combine two batches."""
        merged = {}
        for field in fields(self):
            a, b = getattr(self, field.name), getattr(other, field.name)
            merged[field.name] = max(a, b) if field.name in MAX_FIELDS else a + b
        return AttackStats(**merged)

    def to_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        values = [getattr(self, field.name) for field in fields(self)]
        return torch.tensor(values, dtype=torch.float64, device=device)

    @classmethod
    def from_tensor(cls, values: torch.Tensor) -> AttackStats:
        return cls(*(float(v) for v in values.tolist()))

    @classmethod
    def reduce(cls, per_rank: torch.Tensor) -> AttackStats:
        """(world_size, num_fields) gathered tensors -> one exact total.

        Ranks attack at the same time, so the wall time is the slowest rank's, not the sum.
        """
        rows = [cls.from_tensor(row) for row in per_rank.reshape(-1, len(fields(cls)))]
        total = cls()
        for row in rows:
            total = total.add(row)
        total.seconds = max((row.seconds for row in rows), default=0.0)
        return total

    @property
    def robust_acc(self) -> float:
        return self.robust_correct / self.count if self.count else float("nan")

    @property
    def clean_acc(self) -> float:
        return self.clean_correct / self.count if self.count else float("nan")

    @property
    def success_rate(self) -> float:
        """Share of the clean-correct images that the attack made wrong."""
        return self.fooled / self.clean_correct if self.clean_correct else float("nan")

    def summary(self) -> dict[str, float]:
        """The numbers a report or a logger shows."""
        n = self.count or float("nan")
        return {
            "robust_acc": self.robust_acc,
            "clean_acc": self.clean_acc,
            "success_rate": self.success_rate,
            "linf_mean": self.linf_sum / n,
            "linf_max": self.linf_max,
            "l2_mean": self.l2_sum / n,
            "l2_max": self.l2_max,
            "seconds": self.seconds,
            "count": self.count,
        }


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (frozen BatchNorm, no dropout) with gradients on, even inside inference mode.

    Lightning validates under `torch.inference_mode` unless told otherwise; attacks need autograd.
    The model's previous mode comes back afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        model.train(was_training)


@dataclass
class AttackOutcome:
    """One attacked batch: the numbers, plus what an image grid or a saved batch needs."""

    stats: AttackStats
    x: torch.Tensor
    x_adv: torch.Tensor
    y: torch.Tensor
    pred_clean: torch.Tensor
    pred_adv: torch.Tensor


def attack_batch(
    model: nn.Module,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str,
    where: str = "attack",
    pred_clean: torch.Tensor | None = None,
) -> AttackOutcome:
    """Attack (x, y) once; check x_adv is finite, in [0, 1] and within eps; count the outcome.

    `pred_clean`: the model's predictions on x when already known (saves a forward pass per run).
    """
    with attack_mode(model):
        # clones made here are normal tensors: inference-mode tensors refuse autograd
        x, y = x.detach().clone(), y.detach().clone()
        start = time.perf_counter()
        x_adv = attack(x, y).detach()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            if pred_clean is None:
                pred_clean = model(x).argmax(dim=1)
            pred_adv = model(x_adv).argmax(dim=1)
    if not torch.isfinite(x_adv).all():
        raise AttackFailedError(f"{where} at eps {eps:g} returned non-finite images (NaN or inf)")
    try:
        check_within_budget(x, x_adv, eps, norm)
    except AssertionError as err:
        raise AttackFailedError(f"{where} at eps {eps:g}: {err}") from None
    delta = (x_adv - x).flatten(1)
    linf, l2 = delta.abs().amax(dim=1), delta.norm(dim=1)
    clean_ok, adv_ok = pred_clean == y, pred_adv == y
    stats = AttackStats(
        count=float(len(y)),
        clean_correct=float(clean_ok.sum()),
        robust_correct=float(adv_ok.sum()),
        fooled=float((clean_ok & ~adv_ok).sum()),
        linf_sum=float(linf.sum()),
        l2_sum=float(l2.sum()),
        linf_max=float(linf.max()) if len(y) else 0.0,
        l2_max=float(l2.max()) if len(y) else 0.0,
        seconds=seconds,
    )
    return AttackOutcome(stats, x, x_adv, y, pred_clean, pred_adv)
