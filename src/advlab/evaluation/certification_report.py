"""The certification section of eval.py's report: report.json / report.md, the certified-accuracy
curve, one line per image (certificates.tsv), and the numbers sent to the loggers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on clusters
import matplotlib.pyplot as plt
from lightning.pytorch.loggers import Logger, WandbLogger
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from advlab.evaluation.certification import (
    Batch,
    CertificationResult,
    CertifySettings,
    certify_batches,
)
from advlab.evaluation.report import save_accuracy_plot
from advlab.utils import get_logger

log = get_logger(__name__)
PREFIX = "certify"


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def markdown(result: CertificationResult) -> str:
    """Certified accuracy per radius, the EOT-PGD accuracy beside it, and the run's settings."""
    s = result.settings
    lines = [f"## Certified robustness: randomized smoothing, sigma {s.sigma:g}", ""]
    if result.stopped_early:
        lines += [f"**Stopped early (interrupted): the first {result.num_samples} of "
                  f"{result.requested} images; no attack.**", ""]  # fmt: skip
    lines += [
        f"- Cohen et al.'s CERTIFY on {result.num_samples} test images: n0 = {s.n0}, "
        f"n = {s.n}, alpha = {s.alpha:g}, seed {s.seed}",
        f"- radius cap: **{s.radius_cap:.3f}** (L2): with n = {s.n} no radius above it can be "
        f"certified, whatever the model",
        f"- abstain rate: {_pct(result.abstain_rate)}%",
        f"- average certified radius (ACR): {result.average_certified_radius:.3f}",
        f"- seconds per image: {result.seconds_per_image:.2f}",
        "",
        "| L2 radius | certified accuracy % | smoothed accuracy under EOT-PGD % |",
        "| --- | --- | --- |",
    ]
    for radius in sorted({*s.radii, *result.empirical}):
        certified = _pct(result.certified_accuracy(radius))
        attacked = _pct(result.empirical[radius]) if radius in result.empirical else ""
        lines += [f"| {radius:g} | {certified} | {attacked} |"]
    if result.empirical:
        a = s.attack
        lines += ["", f"EOT-PGD: SmoothedPGD (Salman et al. 2019), {a.steps} steps, "
                      f"{a.noise_draws} noise draws per step; judged by PREDICT with n = {a.n} "
                      f"(abstaining counts as broken)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_curve(result: CertificationResult, path: Path) -> Path:
    """Certified accuracy as a function of the radius, the cap, and the attacked accuracies."""
    s = result.settings
    radii = sorted({0.0, *result.radius[result.correct].tolist(), s.radius_cap * 1.05})
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.step(radii, [100 * result.certified_accuracy(r) for r in radii], where="post",
            label=f"certified (n={s.n})")  # fmt: skip
    if result.empirical:
        ordered = sorted(result.empirical.items())
        ax.plot([r for r, _ in ordered], [100 * a for _, a in ordered], "o--",
                label="under EOT-PGD (upper bound)")  # fmt: skip
    ax.axvline(s.radius_cap, linestyle=":", color="grey", label=f"cap {s.radius_cap:.2f}")
    return save_accuracy_plot(
        fig, ax, "L2 radius", f"Randomized smoothing, sigma {s.sigma:g}", path
    )


def write_certificates(result: CertificationResult, path: Path) -> Path:
    """One line per image, in Cohen et al.'s format (their analysis scripts read it)."""
    rows = ["idx\tlabel\tpredict\tradius\tcorrect\ttime"]
    for i in range(result.num_samples):
        rows.append(
            f"{i}\t{int(result.labels[i])}\t{int(result.prediction[i])}\t"
            f"{float(result.radius[i]):.4f}\t{int(result.correct[i])}\t"
            f"{float(result.seconds[i]):.3f}"
        )
    path.write_text("\n".join(rows) + "\n")
    return path


def write_certification(
    result: CertificationResult, out_dir: Path, meta: dict[str, Any]
) -> dict[str, Path]:
    """Add the section to report.json / report.md (written with `meta` when eval.py ran no
    attack suite), plus the curve and the per-image file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    report = json.loads(json_path.read_text()) if json_path.is_file() else dict(meta)
    report["certification"] = result.as_dict()
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if md_path.is_file():
        text = md_path.read_text() + "\n"
    else:
        text = f"# Certification report: {meta.get('model', '')}\n\n"
        text += "".join(f"- {k}: {v}\n" for k, v in meta.items() if k != "model") + "\n"
    md_path.write_text(text + markdown(result))
    return {
        "json": json_path,
        "markdown": md_path,
        "certified_curve": plot_curve(result, out_dir / "certified_accuracy.png"),
        "certificates": write_certificates(result, out_dir / "certificates.tsv"),
    }


def log_certification(
    loggers: Sequence[Logger], result: CertificationResult, files: dict[str, Path], out_dir: Path
) -> None:
    """Numbers to every logger; the curve and a table to W&B."""
    s = result.settings
    metrics = {f"{PREFIX}/acc_r{r:g}": result.certified_accuracy(r) for r in s.radii}
    metrics.update({f"{PREFIX}/eot_pgd_acc_r{r:g}": a for r, a in result.empirical.items()})
    metrics.update({
        f"{PREFIX}/abstain_rate": result.abstain_rate,
        f"{PREFIX}/acr": result.average_certified_radius,
        f"{PREFIX}/seconds_per_image": result.seconds_per_image,
        f"{PREFIX}/radius_cap": s.radius_cap,
    })  # fmt: skip
    for logger in loggers:
        logger.log_metrics(metrics)
        if not isinstance(logger, WandbLogger):
            continue
        import wandb

        rows = [[r, result.certified_accuracy(r), result.empirical.get(r)] for r in s.radii]
        logger.experiment.log({
            f"{PREFIX}/curve": wandb.Image(str(files["certified_curve"])),
            f"{PREFIX}/table": wandb.Table(
                columns=["radius", "certified_acc", "eot_pgd_acc"], data=rows
            ),
        })  # fmt: skip
        for path in files.values():
            logger.experiment.save(str(path), base_path=str(out_dir), policy="now")


def run_certification(
    settings: CertifySettings,
    model: nn.Module,
    batches: Sequence[Batch],
    out_dir: Path,
    loggers: Sequence[Logger],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Certify with a progress bar, write and log the section; returns its numbers and files."""
    total = sum(len(y) for _, y in batches)
    log.info(
        f"Certifying {total} test images: sigma {settings.sigma:g}, n {settings.n}, n0 "
        f"{settings.n0}, alpha {settings.alpha:g}; no radius above {settings.radius_cap:.3f} "
        f"can be certified with this n"
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    every = max(1, total // 20)
    with Progress(*columns) as bar:
        task = bar.add_task("certify", total=total)

        def show(label: str, done: int, of: int) -> None:
            bar.update(task, description=label, completed=done, total=of)
            if done % every == 0 or done == of:  # the bar does not reach log files
                log.info(f"[{done}/{of} images] {label}")

        result = certify_batches(model, batches, settings, progress=show)
    if result.stopped_early:
        log.warning(f"interrupted: reporting the first {result.num_samples} of {total} images")
    files = write_certification(result, out_dir, meta)
    log_certification(loggers, result, files, out_dir)
    summary = ", ".join(f"{_pct(result.certified_accuracy(r))}% at {r:g}" for r in settings.radii)
    log.info(
        f"certified accuracy (sigma {settings.sigma:g}): {summary}; report: {files['markdown']}"
    )
    return {**result.as_dict(), "files": {k: str(v) for k, v in files.items()}}
