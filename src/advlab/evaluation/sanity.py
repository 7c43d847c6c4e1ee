"""Sanity checks of a robustness evaluation (Carlini et al. 2019, "On Evaluating Adversarial
Robustness", section 5): signs that the attacks, not the model, are what failed.

Each check takes accuracies measured by the suite (`acc[attack][eps]`) and returns a
`CheckResult` with its numbers; a check without the runs it needs is `skip`, never `pass`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

from advlab.evaluation.suite import format_eps

Accuracies = Mapping[str, Mapping[float, float]]
PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass
class SanitySettings:
    """What the checks compare and how much slack they allow.

    Args:
        reference: the suite's iterative gradient attack (PGD): re-run with more steps and at
            `large_eps`, and compared with `single_step`.
        single_step: the suite's one-step attack (FGSM), or None.
        gradient_free: the suite's gradient-free attack (Square), or None.
        tolerance: accuracy may rise this much (with eps, with steps, from FGSM to PGD) before a
            check fails: random starts move single images, so two runs differ by a few.
        large_eps: a budget that allows any image (Linf 1.0): accuracy must fall to chance.
        chance_margin: accuracy allowed above chance (1 / classes) at `large_eps`.
        steps_factor: the reference attack re-runs with this many times its steps.
        masking_margin: the gradient-free attack may beat the best gradient attack by this much.
        zero_gradient_share: the share of images allowed a zero input gradient (see
            `model_checks.input_gradients`).
    """

    reference: str | None = "pgd"
    single_step: str | None = "fgsm"
    gradient_free: str | None = "square"
    tolerance: float = 0.01
    large_eps: float = 1.0
    chance_margin: float = 0.05
    steps_factor: float = 5.0
    masking_margin: float = 0.02
    zero_gradient_share: float = 0.01


@dataclass
class CheckResult:
    """One check: `pass`, `fail` or `skip`, a sentence with the numbers, and the numbers."""

    name: str
    status: str
    detail: str
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _at(name: str, eps: float) -> str:
    return f"{name}@{format_eps(eps)}"


def eps_zero_equals_clean(acc: Accuracies, clean_acc: float) -> CheckResult:
    """At eps 0 an attack cannot move the image: its accuracy must be the clean accuracy exactly."""
    name = "accuracy at eps 0 equals clean accuracy"
    at_zero = {attack: by_eps[0.0] for attack, by_eps in acc.items() if 0.0 in by_eps}
    if not at_zero:
        return CheckResult(name, SKIP, "no attack ran at eps 0")
    wrong = {attack: value for attack, value in at_zero.items() if value != clean_acc}
    shown = ", ".join(f"{_at(a, 0.0)} {_pct(v)}" for a, v in at_zero.items())
    numbers = {"clean_acc": clean_acc, "at_eps_0": at_zero}
    if wrong:
        return CheckResult(
            name,
            FAIL,
            f"clean {_pct(clean_acc)} but {shown}: the evaluation is not deterministic "
            f"(randomized model?) or the attack moves images it must not",
            numbers,
        )
    return CheckResult(name, PASS, f"clean {_pct(clean_acc)} = {shown}", numbers)


def accuracy_does_not_rise_with_eps(
    acc: Accuracies, tolerance: float, exclude: Iterable[str] = ()
) -> CheckResult:
    """A larger ball contains the smaller one: an attack that optimizes cannot do worse in it.

    Single-step attacks (`exclude`) are exempt: one big FGSM step overshoots, so FGSM accuracy
    often rises with eps on models that are not robust; that is FGSM's weakness, not a bug.
    """
    name = "accuracy does not rise with eps"
    rises = []
    compared = 0
    for attack, by_eps in acc.items():
        if attack in exclude:
            continue
        ordered = sorted(by_eps.items())
        for (eps_a, acc_a), (eps_b, acc_b) in pairwise(ordered):
            compared += 1
            if acc_b > acc_a + tolerance:
                rises.append(
                    f"{attack} {_pct(acc_a)} at {format_eps(eps_a)} -> {_pct(acc_b)} at "
                    f"{format_eps(eps_b)}"
                )
    numbers = {"tolerance": tolerance, "rises": rises}
    if not compared:
        return CheckResult(name, SKIP, "no attack ran at two epsilons", numbers)
    if rises:
        return CheckResult(
            name,
            FAIL,
            f"rises by more than {_pct(tolerance)}: {'; '.join(rises)} (attack too weak at large "
            f"eps: step size, iterations, or gradient masking)",
            numbers,
        )
    return CheckResult(
        name, PASS, f"{compared} eps steps, none rises more than {_pct(tolerance)}", numbers
    )


def large_eps_reaches_chance(
    attack: str, large_eps: float, accuracy: float | None, num_classes: int, margin: float
) -> CheckResult:
    """With a budget that allows any image, an attack that works leaves at most chance."""
    name = "a very large eps drives accuracy to chance"
    if accuracy is None:
        return CheckResult(name, SKIP, f"{attack} did not run at eps {format_eps(large_eps)}")
    chance = 1.0 / num_classes
    numbers = {"attack": attack, "eps": large_eps, "accuracy": accuracy, "chance": chance}
    shown = f"{_at(attack, large_eps)} {_pct(accuracy)}, chance {_pct(chance)} + {_pct(margin)}"
    if accuracy > chance + margin:
        return CheckResult(
            name, FAIL, f"{shown}: the attack cannot even use an unbounded budget", numbers
        )
    return CheckResult(name, PASS, shown, numbers)


def more_steps_do_not_help(
    attack: str, eps: float, steps: int, accuracy: float | None, more_steps: int,
    more_accuracy: float | None, tolerance: float,
) -> CheckResult:  # fmt: skip
    """An attack given more iterations must not do worse (it would not be optimizing)."""
    name = "more attack steps do not help the model"
    if accuracy is None or more_accuracy is None:
        return CheckResult(name, SKIP, f"{attack} was not re-run with more steps")
    numbers = {
        "attack": attack, "eps": eps, "steps": steps, "accuracy": accuracy,
        "more_steps": more_steps, "more_accuracy": more_accuracy, "tolerance": tolerance,
    }  # fmt: skip
    shown = (
        f"{_at(attack, eps)}: {steps} steps {_pct(accuracy)}, {more_steps} steps "
        f"{_pct(more_accuracy)}"
    )
    if more_accuracy > accuracy + tolerance:
        return CheckResult(name, FAIL, f"{shown}: more steps made the attack weaker", numbers)
    if more_accuracy < accuracy - tolerance:
        shown += f" (the {steps}-step number overstates robustness: not converged)"
    return CheckResult(name, PASS, shown, numbers)


def iterative_beats_single_step(
    acc: Accuracies, iterative: str | None, single_step: str | None, tolerance: float
) -> CheckResult:
    """An iterative attack that does worse than one step of the same gradient is broken."""
    name = "iterative attack beats single-step"
    if not iterative or not single_step or iterative not in acc or single_step not in acc:
        return CheckResult(name, SKIP, "needs both an iterative and a single-step attack")
    shared = sorted(set(acc[iterative]) & set(acc[single_step]) - {0.0})
    if not shared:
        return CheckResult(name, SKIP, f"{iterative} and {single_step} share no eps > 0")
    pairs = {format_eps(e): (acc[iterative][e], acc[single_step][e]) for e in shared}
    worse = [e for e, (it, one) in pairs.items() if it > one + tolerance]
    shown = ", ".join(
        f"eps {e}: {iterative} {_pct(it)} vs {single_step} {_pct(one)}"
        for e, (it, one) in pairs.items()
    )
    numbers = {"iterative": iterative, "single_step": single_step, "pairs": pairs}
    if worse:
        return CheckResult(name, FAIL, f"{shown}: gradient masking or a broken attack", numbers)
    return CheckResult(name, PASS, shown, numbers)


def gradient_free_does_not_win(
    acc: Accuracies, gradient_free: str | None, margin: float, exclude: Iterable[str] = ()
) -> CheckResult:
    """If a black-box search beats a gradient attack, the gradients are hiding something.

    Compared with the gradient attacks alone (`exclude` names runs that contain a gradient-free
    search themselves, such as standard AutoAttack). Every gradient run it beats by more than
    `margin` is listed by name in `numbers["beaten"]` (`attack@eps`): those numbers overstate
    robustness.
    """
    name = "gradient-free attack does not beat gradient attacks (gradient masking)"
    if not gradient_free or gradient_free not in acc:
        return CheckResult(name, SKIP, "no gradient-free attack in the suite")
    skip = {gradient_free, *exclude}
    rows, beaten = [], []
    for eps, free_acc in sorted(acc[gradient_free].items()):
        gradient = {a: by_eps[eps] for a, by_eps in acc.items() if a not in skip and eps in by_eps}
        if eps == 0.0 or not gradient:
            continue
        best_name = min(gradient, key=gradient.__getitem__)
        rows.append(
            f"eps {format_eps(eps)}: {gradient_free} {_pct(free_acc)}, best gradient attack "
            f"{best_name} {_pct(gradient[best_name])}"
        )
        beaten += [f"{a}@{eps:g}" for a, value in gradient.items() if free_acc < value - margin]
    numbers = {"margin": margin, "beaten": beaten, "compared_with": sorted(
        {a for a in acc if a not in skip})}  # fmt: skip
    if not rows:
        return CheckResult(name, SKIP, f"no gradient attack shares an eps with {gradient_free}")
    if beaten:
        return CheckResult(
            name,
            FAIL,
            f"{'; '.join(rows)}: {gradient_free} wins by more than {_pct(margin)} — GRADIENT "
            f"MASKING suspected; untrustworthy: {', '.join(beaten)}",
            numbers,
        )
    return CheckResult(name, PASS, "; ".join(rows), numbers)
