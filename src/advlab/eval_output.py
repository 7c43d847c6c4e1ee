"""Where an evaluation's result goes besides the files: the console, the log and the loggers.

The verdict goes everywhere first (and last on the console): a SUSPECT headline is never shown
without it.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from lightning.pytorch.loggers import Logger, WandbLogger
from rich.console import Console

from advlab.evaluation import RobustnessReport
from advlab.evaluation.report import verdict_line
from advlab.evaluation.suite import format_eps
from advlab.utils import get_logger

log = get_logger(__name__)


def package_versions() -> dict[str, str]:
    found = {}
    for package in ("torch", "torchattacks", "pyautoattack", "advlab"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def log_report(
    loggers: list[Logger], report: RobustnessReport, files: dict[str, Path], out_dir: Path
) -> None:
    """Numbers to every logger; the verdict into the W&B summary; curve, tables, files to W&B."""
    metrics = {
        "eval/clean_acc": report.clean_acc,
        "eval/trustworthy": float(report.trustworthy),
    }
    for run in report.results:
        key = f"eval/{run.attack}/eps{format_eps(run.eps)}"
        metrics.update({f"{key}/{name}": value for name, value in run.numbers.items()})
    for logger in loggers:
        logger.log_metrics(metrics)
        if not isinstance(logger, WandbLogger):
            continue
        import wandb

        logger.experiment.summary["eval/verdict"] = report.verdict
        headline = report.headline
        if headline is not None:
            logger.experiment.summary["eval/headline_robust_acc"] = headline.robust_acc
        rows = [run.as_dict() for run in report.results]
        columns = list(rows[0])
        logger.experiment.log({
            "eval/robustness_curve": wandb.Image(str(files["curve"])),
            "eval/results": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows]),
            "eval/checks": wandb.Table(
                columns=["check", "status", "detail"],
                data=[[c.name, c.status, c.detail] for c in report.checks],
            ),
        })  # fmt: skip
        for path in files.values():
            logger.experiment.save(str(path), base_path=str(out_dir), policy="now")


def print_summary(report: RobustnessReport, files: dict[str, Path]) -> None:
    """Every check, then the report's path, then the verdict as the last line."""
    console = Console(stderr=False)
    console.print(f"clean accuracy: {100 * report.clean_acc:.2f}% on {report.num_samples} images")
    for note in report.notes:
        console.print(f"note: {note}")
    for check in report.checks:
        style = {"pass": "green", "fail": "bold white on red", "skip": "yellow"}[check.status]
        console.print(f"[{style}]{check.status.upper():4}[/] {check.name}: {check.detail}")
    for check in report.failed_checks:
        log.warning(f"CHECK FAILED: {check.name}: {check.detail}")
    console.print(f"report: {files['markdown']}")
    line = verdict_line(report)
    log.info(line)
    console.print(f"[bold {'green' if report.trustworthy else 'white on red'}]{line}[/]")
