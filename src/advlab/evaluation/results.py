"""What a robustness evaluation found: one row per attack run, the checks, and the verdict."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from advlab.evaluation.sanity import CheckResult

TRUSTWORTHY = "TRUSTWORTHY"
SUSPECT = "SUSPECT"


@dataclass
class RunResult:
    """One attack at one epsilon: its label, budget and summary numbers.

    `trusted` is False when a check showed the attack failed on this model (a gradient-free
    attack beat it at this eps): its number overstates robustness.
    """

    attack: str
    label: str
    eps: float
    numbers: dict[str, float]
    purpose: str = "suite"  # suite | headline | sanity
    trusted: bool = True

    @property
    def robust_acc(self) -> float:
        return self.numbers["robust_acc"]

    def to_json(self, **meta: Any) -> str:
        """The report as report.json holds it, with `meta` (e.g. model=...) in front."""
        return json.dumps({**meta, **self.as_dict()}, indent=2, default=str)

    def as_dict(self) -> dict[str, Any]:
        return {"attack": self.attack, "label": self.label, "eps": self.eps,
                "purpose": self.purpose, "trusted": self.trusted, **self.numbers}  # fmt: skip


@dataclass
class RobustnessReport:
    """Everything report.json / report.md / the curve show.

    `verdict` is the first thing to read: TRUSTWORTHY when every check passed, else SUSPECT with
    the failed checks named. A SUSPECT headline must not be quoted as robust accuracy.
    """

    num_samples: int
    num_classes: int
    clean_acc: float
    results: list[RunResult] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    headline_name: str | None = None
    norm: str = "Linf"
    notes: list[str] = field(default_factory=list)

    def accuracies(self, purposes: tuple[str, ...] = ("suite", "headline")) -> dict:
        """acc[attack][eps] of the runs with one of `purposes`."""
        table: dict[str, dict[float, float]] = {}
        for run in self.results:
            if run.purpose in purposes:
                table.setdefault(run.attack, {})[run.eps] = run.robust_acc
        return table

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [check for check in self.checks if check.failed]

    @property
    def headline(self) -> RunResult | None:
        """The run to quote (its `robust_acc`, `label`, `eps`), if the suite named one."""
        return next((r for r in self.results if r.purpose == "headline"), None)

    @property
    def verdict(self) -> str:
        """`TRUSTWORTHY`, or `SUSPECT: <the failed checks>`."""
        if not self.failed_checks:
            return TRUSTWORTHY
        return f"{SUSPECT}: " + "; ".join(check.name for check in self.failed_checks)

    @property
    def trustworthy(self) -> bool:
        return not self.failed_checks

    def robustbench(self) -> dict[str, Any]:
        """The fields RobustBench's model cards use (accuracies in %), to compare as they are."""
        headline = self.headline
        return {
            "clean_acc": round(100 * self.clean_acc, 2),
            "autoattack_acc": None if headline is None else round(100 * headline.robust_acc, 2),
            "threat_model": self.norm,
            "eps": None if headline is None else headline.eps,
            "n_ex": self.num_samples,
            "attack": None if headline is None else headline.label,
            "verdict": self.verdict,
        }

    def to_json(self, **meta: Any) -> str:
        """The report as report.json holds it, with `meta` (e.g. model=...) in front."""
        return json.dumps({**meta, **self.as_dict()}, indent=2, default=str)

    def as_dict(self) -> dict[str, Any]:
        headline = self.headline
        return {
            "verdict": self.verdict,
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "clean_acc": self.clean_acc,
            "headline": None if headline is None else headline.as_dict(),
            "robustbench": self.robustbench(),
            "notes": self.notes,
            "results": [run.as_dict() for run in self.results],
            "sanity_checks": [check.as_dict() for check in self.checks],
            "sanity_passed": self.trustworthy,
        }
