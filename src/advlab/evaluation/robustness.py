"""A robustness evaluation: clean accuracy, the suite, the sanity re-runs and the checks.

Knows nothing of Hydra, checkpoints or loggers: it takes a model, batches and a parsed suite,
so tests can call it on toy models built to fail each check.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from advlab.evaluation import model_checks, sanity
from advlab.evaluation.measure import AttackStats
from advlab.evaluation.results import RobustnessReport, RunResult
from advlab.evaluation.runner import Batch, predict, run_attack
from advlab.evaluation.sanity import FAIL, CheckResult, SanitySettings
from advlab.evaluation.suite import (
    SuiteEntry,
    attack_config_at,
    build_attack_at,
    check_epsilon,
    describe_attack,
    has_gradient_free_part,
    runs,
)

AUTOATTACK = "advlab.attacks.autoattack.OfficialAutoAttack"

#: progress(label, done_batches, total_batches)
Progress = Callable[[str, int, int], None]


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
    """Probe the model, run the suite and the sanity re-runs on `batches`; numbers and checks.

    `budget` is the threat model's eps (more-steps re-run; default: the reference's largest eps);
    `headline` names the entry whose number is the one to quote. A randomized model gets
    AutoAttack's `rand` version (EOT) as its headline, and the report says so.
    """
    settings = settings or SanitySettings()
    model.eval()
    probes = [
        model_checks.deterministic(model, batches[0][0]),
        model_checks.returns_logits(model, batches[0][0]),
        model_checks.input_gradients(model, batches, settings.zero_gradient_share),
    ]
    before = model_checks.state_snapshot(model)
    predictions = predict(model, batches)
    correct = sum(int((p == y).sum()) for p, (_, y) in zip(predictions, batches, strict=True))
    count = sum(len(y) for _, y in batches)
    with torch.no_grad():
        num_classes = int(model(batches[0][0][:1]).shape[1])
    norm = entries[0].norm if entries else "Linf"
    report = RobustnessReport(
        count, num_classes, correct / count, headline_name=headline, norm=norm
    )
    if probes[0].failed:
        entries = _with_eot_headline(entries, headline, report)
    plan = _plan(entries, settings, budget)
    where = {
        p.attack: "attack" if p.attack == headline else f"suite.attacks.{p.attack}" for p in plan
    }
    for item in plan:  # a bad setting fails now, not after an hour of attacks
        build_attack_at(item.cfg, model, item.eps, where[item.attack])
    total, done = len(plan) * len(batches), 0
    warnings: dict[str, list[str]] = {}
    for item in plan:
        label = describe_attack(item.cfg)
        attack = build_attack_at(item.cfg, model, item.eps, where[item.attack])

        def tick(_outcome: Any, label: str = label, eps: float = item.eps) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(f"{label} @ {eps:g}", done, total)

        if progress is not None and hasattr(attack, "progress"):
            attack.progress = lambda stage, i, n, label=label: progress(
                f"{label}: {stage} ({i}/{n})", done, total
            )
        stats: AttackStats = run_attack(
            model, item.cfg, item.eps, batches, where[item.attack], tick, predictions, attack
        )
        for message in getattr(attack, "warnings", []):
            warnings.setdefault(message, []).append(f"{item.attack}@{item.eps:g}")
        purpose = (
            "headline" if item.attack == headline and item.purpose == "suite" else item.purpose
        )
        report.results.append(RunResult(item.attack, label, item.eps, stats.summary(), purpose))
    probes.append(model_checks.unchanged_by_attacks(model, before, *batches[0]))
    report.checks = probes + _checks(report, entries, settings, budget) + _flags(warnings)
    return report


def _with_eot_headline(
    entries: Sequence[SuiteEntry], headline: str | None, report: RobustnessReport
) -> list[SuiteEntry]:
    """A randomized model's headline: AutoAttack's `rand` version (APGD-CE and APGD-DLR with
    expectation over transformation), AutoAttack's own advice for randomized defences."""
    out = []
    for entry in entries:
        if entry.name == headline and entry.attack.get("_target_") == AUTOATTACK:
            attack = {**entry.attack, "version": "rand", "attacks": None}
            entry = replace(entry, attack=attack)
            report.notes.append(
                "the model is randomized: the headline ran AutoAttack's rand version "
                "(APGD-CE + APGD-DLR, EOT over 20 draws)"
            )
        out.append(entry)
    return out


def _flags(warnings: dict[str, list[str]]) -> list[CheckResult]:
    """Every kind of warning AutoAttack logged becomes one failed check, with the runs that
    raised it. AutoAttack repeats a warning per stage with a new count ("there are 93 points
    with zero gradient", then 89, ...): those are one kind, shown once with the counts' range."""
    kinds: dict[str, list[str]] = {}
    for message in warnings:
        kinds.setdefault(re.sub(r"\d+", "#", message), []).append(message)
    checks = []
    for pattern, messages in kinds.items():
        shown = messages[0]
        if len(messages) > 1 and pattern.count("#") == 1:
            counts = sorted(int(re.search(r"\d+", message)[0]) for message in messages)
            shown = pattern.replace("#", f"{counts[0]}-{counts[-1]}")
        runs = list(dict.fromkeys(run for message in messages for run in warnings[message]))
        checks.append(
            CheckResult(
                f"AutoAttack: {shown}",
                FAIL,
                f"raised by {', '.join(runs)}",
                {"messages": messages, "runs": runs},
            )
        )
    return checks


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
    # the gradient attacks alone: never a run that itself contains a gradient-free search
    not_gradient = [e.name for e in entries if has_gradient_free_part(e.attack)]
    masking = sanity.gradient_free_does_not_win(
        acc, settings.gradient_free, settings.masking_margin, exclude=not_gradient
    )
    for run in report.results:
        if f"{run.attack}@{run.eps:g}" in masking.numbers.get("beaten", []):
            run.trusted = False
    checks.append(masking)
    return checks
