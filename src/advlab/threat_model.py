"""The threat model of a dataset: which norm, and how large a perturbation an attacker gets.

Named once, in the data config (`data.threat_model`), and read by every attack config through
`${data.threat_model.eps}`: a run on CIFAR-10 cannot silently attack at MNIST's budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from advlab.errors import ConfigError

NORMS = ("Linf", "L2")


def check_norm(norm: Any, where: str) -> str:
    """`Linf` or `L2`, else one line naming `where`."""
    if norm not in NORMS:
        raise ConfigError(f"{where}={norm!r} is not one of {', '.join(NORMS)}")
    return str(norm)


def check_budget(eps: Any, norm: str, where: str, allow_zero: bool = False) -> float:
    """A budget in pixel units of [0, 1] images: Linf in (0, 1], L2 > 0 (0 too when allowed)."""
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps):
        raise ConfigError(f"{where}={eps!r} is not a number")
    low_ok = eps >= 0 if allow_zero else eps > 0
    if norm == "Linf" and not (low_ok and eps <= 1):
        raise ConfigError(
            f"{where}={eps:g} is outside {'[0' if allow_zero else '(0'}, 1]: Linf budgets are in "
            f"pixel units of [0, 1] images (MNIST 0.3, CIFAR-10 8/255≈0.0314)"
        )
    if norm == "L2" and not low_ok:
        raise ConfigError(f"{where}={eps:g} must be {'>=' if allow_zero else '>'} 0 (an L2 radius)")
    return float(eps)


@dataclass(frozen=True)
class ThreatModel:
    """`norm` (Linf or L2) and `eps`, the budget in pixel units of [0, 1] images."""

    norm: str
    eps: float

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any] | ThreatModel, where: str = "data.threat_model"
    ) -> ThreatModel:
        if isinstance(cfg, ThreatModel):
            return cfg
        if not isinstance(cfg, Mapping) or set(cfg) != {"norm", "eps"}:
            raise ConfigError(f"{where} must be {{norm: Linf|L2, eps: <budget>}}, got {cfg!r}")
        norm = check_norm(cfg["norm"], f"{where}.norm")
        return cls(norm, check_budget(cfg["eps"], norm, f"{where}.eps"))

    def __str__(self) -> str:
        return f"{self.norm}, eps {self.eps:.4g}"
