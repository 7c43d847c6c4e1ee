"""Write a RobustnessReport as report.json, report.md (tables) and robustness_curve.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on clusters
import matplotlib.pyplot as plt

from advlab.evaluation.results import RobustnessReport
from advlab.evaluation.suite import format_eps

MARKS = {"pass": "PASS", "fail": "**FAIL**", "skip": "skip"}


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.2f}"  # NaN != NaN


def write_json(report: RobustnessReport, path: Path, meta: dict[str, Any]) -> Path:
    path.write_text(report.to_json(**meta) + "\n")
    return path


def verdict_line(report: RobustnessReport) -> str:
    """The one line to read first: the verdict, then the headline it qualifies."""
    headline = report.headline
    number = "" if headline is None else (
        f" — {headline.label} at eps {format_eps(headline.eps)}: {_pct(headline.robust_acc)}%"
        + ("" if report.trustworthy else " (do not quote: the checks above failed)")
    )  # fmt: skip
    return f"{report.verdict}{number}"


def markdown(report: RobustnessReport, meta: dict[str, Any]) -> str:
    """The verdict, then accuracy per attack and eps, every run's details, the checks."""
    lines = [f"**{verdict_line(report)}**", "", f"# Robustness report: {meta.get('model', '')}", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items() if key != "model"]
    lines += [f"- images: {report.num_samples} ({report.num_classes} classes)"]
    lines += [f"- clean accuracy: {_pct(report.clean_acc)}%"]
    lines += [f"- note: {note}" for note in report.notes]
    failed = len(report.failed_checks)
    lines += [f"- checks: {'all passed' if not failed else f'{failed} FAILED'}"]
    lines += ["", "## Robust accuracy (%)", "", "Runs marked † were beaten by a gradient-free "
              "attack: their numbers overstate robustness.", ""]  # fmt: skip

    shown = [r for r in report.results if r.purpose != "sanity"]
    epsilons = sorted({r.eps for r in shown})
    lines += ["| attack | " + " | ".join(f"eps {format_eps(e)}" for e in epsilons) + " |"]
    lines += ["| --- " * (len(epsilons) + 1) + "|"]
    rows: dict[str, dict[float, float]] = {}
    labels: dict[str, str] = {}
    untrusted = {(run.attack, run.eps) for run in shown if not run.trusted}
    for run in shown:
        rows.setdefault(run.attack, {})[run.eps] = run.robust_acc
        labels[run.attack] = f"{run.attack} ({run.label})"
    for attack, by_eps in rows.items():
        cells = [
            (_pct(by_eps[e]) + (" †" if (attack, e) in untrusted else "")) if e in by_eps else ""
            for e in epsilons
        ]
        lines += [f"| {labels[attack]} | " + " | ".join(cells) + " |"]

    lines += ["", "## Every run", ""]
    lines += ["| attack | eps | robust acc % | success rate % | Linf mean / max | "
              "L2 mean / max | seconds | purpose |"]  # fmt: skip
    lines += ["| --- " * 8 + "|"]
    for run in report.results:
        n = run.numbers
        lines += [
            f"| {run.attack} ({run.label}) | {format_eps(run.eps)} | {_pct(n['robust_acc'])} | "
            f"{_pct(n['success_rate'])} | {n['linf_mean']:.4f} / {n['linf_max']:.4f} | "
            f"{n['l2_mean']:.3f} / {n['l2_max']:.3f} | {n['seconds']:.1f} | {run.purpose} |"
        ]
    lines += ["", "## Checks (Carlini et al. 2019; AutoAttack's flags; model probes)", ""]
    lines += ["| check | result | numbers |", "| --- | --- | --- |"]
    for check in report.checks:
        lines += [f"| {check.name} | {MARKS[check.status]} | {check.detail} |"]
    return "\n".join(lines) + "\n"


def write_markdown(report: RobustnessReport, path: Path, meta: dict[str, Any]) -> Path:
    path.write_text(markdown(report, meta))
    return path


def plot_curve(report: RobustnessReport, path: Path, norm: str = "Linf") -> Path:
    """Accuracy vs eps, one line per attack; the clean accuracy as a dotted line."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for attack, by_eps in report.accuracies().items():
        ordered = sorted(by_eps.items())
        ax.plot([e for e, _ in ordered], [100 * a for _, a in ordered], marker="o", label=attack)
    ax.axhline(100 * report.clean_acc, linestyle=":", color="grey", label="clean")
    ax.axhline(100 / report.num_classes, linestyle="--", color="lightgrey", label="chance")
    return save_accuracy_plot(fig, ax, f"epsilon ({norm})", "Robust accuracy vs epsilon", path)


def save_accuracy_plot(fig: Any, ax: Any, xlabel: str, title: str, path: Path) -> Path:
    """Label an accuracy-in-percent plot the same way in every report, save it, close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 101)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(
    report: RobustnessReport, out_dir: Path, meta: dict[str, Any], norm: str = "Linf"
) -> dict[str, Path]:
    """The three files in `out_dir`; returns their paths by kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "json": write_json(report, out_dir / "report.json", meta),
        "markdown": write_markdown(report, out_dir / "report.md", meta),
        "curve": plot_curve(report, out_dir / "robustness_curve.png", norm),
    }
