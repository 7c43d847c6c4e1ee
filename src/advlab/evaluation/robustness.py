"""A robustness evaluation: clean accuracy, the suite, the sanity re-runs and the checks.

Knows nothing of Hydra, checkpoints or loggers: it takes a model, batches and a parsed suite,
so tests can call it on toy models built to fail each check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advlab.evaluation import sanity
from advlab.evaluation.measure import AttackStats
from advlab.evaluation.runner import Batch, predict, run_attack
from advlab.evaluation.sanity import CheckResult, SanitySettings
from advlab.evaluation.suite import (
    SuiteEntry,
    attack_config_at,
    build_attack_at,
    check_epsilon,
    describe_attack,
    runs,
)

#: progress(label, done_batches, total_batches)
Progress = Callable[[str, int, int], None]


@dataclass
class RunResult:
    """One attack at one epsilon: its label, budget and summary numbers."""

    attack: str
    label: str
    eps: float
    numbers: dict[str, float]
    purpose: str = "suite"  # suite | headline | sanity

    @property
    def robust_acc(self) -> float:
        return self.numbers["robust_acc"]

    def as_dict(self) -> dict[str, Any]:
        return {"attack": self.attack, "label": self.label, "eps": self.eps,
                "purpose": self.purpose, **self.numbers}  # fmt: skip


@dataclass
class RobustnessReport:
    """Everything report.json / report.md / the curve show."""

    num_samples: int
    num_classes: int
    clean_acc: float
    results: list[RunResult] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    headline: str | None = None

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

    def as_dict(self) -> dict[str, Any]:
        headline = next((r.as_dict() for r in self.results if r.purpose == "headline"), None)
        return {
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "clean_acc": self.clean_acc,
            "headline": headline,
            "results": [run.as_dict() for run in self.results],
            "sanity_checks": [check.as_dict() for check in self.checks],
            "sanity_passed": not self.failed_checks,
        }


@dataclass
class _Planned:
    attack: str
    cfg: dict[str, Any]
    eps: float
    purpose: str


def _plan(
    entries: Sequence[SuiteEntry], settings: SanitySettings, budget: float | None
) -> list[_Planned]:
    """Every run, suite first, then the re-runs the sanity checks need."""
    plan = [_Planned(e.name, e.attack, eps, "suite") for e, eps in runs(entries)]
    reference = next((e for e in entries if e.name == settings.reference), None)
    if reference is None:
        return plan
    here = f"sanity.reference ({reference.name})"
    large = check_epsilon(settings.large_eps, reference.norm, f"{here} at sanity.large_eps")
    if large not in reference.epsilons:
        plan.append(_Planned(reference.name, reference.attack, large, "sanity"))
    steps_eps = budget if budget is not None else max(reference.epsilons)
    if steps_eps not in reference.epsilons:
        plan.append(_Planned(reference.name, reference.attack, steps_eps, "sanity"))
    if "steps" in reference.attack and settings.steps_factor != 1:
        more = attack_config_at(reference.attack, reference.attack["eps"], settings.steps_factor)
        plan.append(_Planned(f"{reference.name}_more_steps", more, steps_eps, "sanity"))
    return plan


def evaluate_robustness(
    model: nn.Module,
    batches: Sequence[Batch],
    entries: Sequence[SuiteEntry],
    settings: SanitySettings | None = None,
    budget: float | None = None,
    headline: str | None = None,
    progress: Progress | None = None,
) -> RobustnessReport:
    """Run the suite and the sanity re-runs on `batches`; return numbers and checks.

    `budget` is the threat model's eps (more-steps re-run; default: the reference's largest eps);
    `headline` names the entry whose number is the one to quote.
    """
    settings = settings or SanitySettings()
    predictions = predict(model, batches)
    correct = sum(int((p == y).sum()) for p, (_, y) in zip(predictions, batches, strict=True))
    count = sum(len(y) for _, y in batches)
    with torch.no_grad():
        num_classes = int(model.eval()(batches[0][0][:1]).shape[1])
    report = RobustnessReport(count, num_classes, correct / count, headline=headline)
    plan = _plan(entries, settings, budget)
    where = {
        p.attack: "attack" if p.attack == headline else f"suite.attacks.{p.attack}" for p in plan
    }
    for item in plan:  # a bad setting fails now, not after an hour of attacks
        build_attack_at(item.cfg, model, item.eps, where[item.attack])
    total, done = len(plan) * len(batches), 0
    for item in plan:
        label = describe_attack(item.cfg)

        def tick(_outcome: Any, label: str = label, eps: float = item.eps) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(f"{label} @ {eps:g}", done, total)

        stats: AttackStats = run_attack(
            model, item.cfg, item.eps, batches, where[item.attack], tick, predictions
        )
        purpose = (
            "headline" if item.attack == headline and item.purpose == "suite" else item.purpose
        )
        report.results.append(RunResult(item.attack, label, item.eps, stats.summary(), purpose))
    report.checks = _checks(report, entries, settings, budget)
    return report


def _checks(
    report: RobustnessReport,
    entries: Sequence[SuiteEntry],
    settings: SanitySettings,
    budget: float | None,
) -> list[CheckResult]:
    acc = report.accuracies()
    every = report.accuracies(("suite", "headline", "sanity"))
    reference = next((e for e in entries if e.name == settings.reference), None)
    checks = [
        sanity.eps_zero_equals_clean(acc, report.clean_acc),
        sanity.accuracy_does_not_rise_with_eps(
            acc, settings.tolerance, exclude=[settings.single_step or ""]
        ),
    ]
    name = settings.reference or "reference"
    if reference is None:
        checks.append(sanity.large_eps_reaches_chance(name, settings.large_eps, None, 2, 0))
        checks.append(sanity.more_steps_do_not_help(name, 0.0, 0, None, 0, None, 0))
    else:
        large = every[name].get(settings.large_eps)
        checks.append(
            sanity.large_eps_reaches_chance(
                name, settings.large_eps, large, report.num_classes, settings.chance_margin
            )
        )
        steps_eps = budget if budget is not None else max(reference.epsilons)
        more = every.get(f"{name}_more_steps", {}).get(steps_eps)
        steps = int(reference.attack.get("steps", 0))
        more_steps = round(steps * settings.steps_factor)
        accuracy = every[name].get(steps_eps)
        check = sanity.more_steps_do_not_help(
            name, steps_eps, steps, accuracy, more_steps, more, settings.tolerance
        )
        checks.append(check)
    checks.append(
        sanity.iterative_beats_single_step(
            acc, settings.reference, settings.single_step, settings.tolerance
        )
    )
    checks.append(
        sanity.gradient_free_does_not_win(acc, settings.gradient_free, settings.masking_margin)
    )
    return checks
