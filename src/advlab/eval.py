"""Evaluate any classifier: suite over epsilons, official AutoAttack, checks, a verdict.

`python eval.py ckpt_path=...` (or `net=... weights=...`, or `torchscript=...`) writes report.json,
report.md and robustness_curve.png into its run dir and sends them to the configured loggers.
Exit status: 0 TRUSTWORTHY, 3 SUSPECT (when `fail_on_suspect`), 2 a user error.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import LightningDataModule
from omegaconf import DictConfig, OmegaConf
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from advlab.attacks.build import as_plain_dict
from advlab.checkpoints import trust_targets
from advlab.errors import AdvlabError, ConfigError
from advlab.eval_output import log_report, package_versions, print_summary
from advlab.evaluation import SanitySettings, evaluate_robustness, parse_suite
from advlab.evaluation.report import write_report
from advlab.evaluation.runner import Batch
from advlab.evaluation.suite import SuiteEntry, check_epsilon, format_eps, make_entry
from advlab.loading import check_one_source, load_model
from advlab.preflight import check_model_fits_data
from advlab.train import close_loggers, resolve_ckpt_path
from advlab.utils import get_logger, instantiate, instantiate_loggers
from advlab.utils.config_tree import print_config_tree

log = get_logger(__name__)

HEADLINE = "headline"
#: exit status of `python eval.py` when the verdict is SUSPECT (2 is a user error)
SUSPECT_EXIT = 3


def test_batches(
    datamodule: LightningDataModule, num_samples: int, batch_size: int, device: torch.device
) -> list[Batch]:
    """The first `num_samples` test images (-1: all) as float [0, 1] batches on `device`."""
    datamodule.prepare_data()
    datamodule.setup("test")
    images, labels, kept = [], [], 0
    for batch in datamodule.test_dataloader():
        x, y = datamodule.on_after_batch_transfer(batch, 0)  # uint8 -> [0, 1] floats
        images.append(x)
        labels.append(y)
        kept += len(y)
        if 0 <= num_samples <= kept:
            break
    x, y = torch.cat(images), torch.cat(labels)
    if num_samples >= 0:
        x, y = x[:num_samples], y[:num_samples]
    if len(y) == 0:
        raise ConfigError("the test split is empty (num_samples=0?)")
    x, y = x.to(device), y.to(device)
    return list(zip(x.split(batch_size), y.split(batch_size), strict=True))


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError as err:
        raise ConfigError(f"device={choice!r} is not a device (auto, cpu, cuda, cuda:1)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={choice}: no CUDA device here (use device=auto or cpu)")
    return device


def suite_entries(cfg: DictConfig) -> tuple[list[SuiteEntry], float, SanitySettings]:
    """The suite plus the headline attack at the threat model's eps, and the check settings."""
    headline = make_entry(HEADLINE, as_plain_dict(cfg.attack), None, where="attack")
    if "eps" in cfg.suite:  # the threat budget first: every multiple of it is checked after
        check_epsilon(cfg.suite.eps, headline.norm, "suite.eps")
    entries = parse_suite(cfg.suite, where="suite")
    if HEADLINE in {e.name for e in entries}:
        raise ConfigError(f"suite.attacks.{HEADLINE}: the name is taken by the headline attack")
    eps = check_epsilon(cfg.suite.get("eps", headline.attack["eps"]), headline.norm, "suite.eps")
    if eps <= 0:
        raise ConfigError(f"suite.eps={eps:g}: the threat model's budget must be > 0")
    entries.append(SuiteEntry(HEADLINE, headline.attack, (eps,)))
    settings = SanitySettings(**as_plain_dict(cfg.get("sanity") or {}))
    names = [e.name for e in entries]
    for role in ("reference", "single_step", "gradient_free"):
        name = getattr(settings, role)
        if name is not None and name not in names:
            raise ConfigError(
                f"sanity.{role}={name!r} is not an attack of the suite ({', '.join(names)})"
            )
    return entries, eps, settings


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Build everything from `cfg`, run the evaluation, write and log the report."""
    started = time.perf_counter()
    trust_targets(cfg.get("trusted_targets"))
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
    check_one_source(cfg)
    entries, eps, settings = suite_entries(cfg)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir)
    device = pick_device(str(cfg.get("device", "auto")))
    L.seed_everything(cfg.get("seed", 12345), workers=True, verbose=False)
    model, described = load_model(cfg, device, ckpt_path)
    datamodule: LightningDataModule = instantiate(cfg.data)
    check_model_fits_data(model, datamodule)
    batches = test_batches(datamodule, int(cfg.num_samples), int(cfg.batch_size), device)
    loggers = instantiate_loggers(cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    log.info(
        f"Evaluating {described} on {sum(len(y) for _, y in batches)} test images ({device}): "
        + ", ".join(
            f"{e.name} ({e.label}) at {', '.join(map(format_eps, e.epsilons))}" for e in entries
        )
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns) as progress:
        task = progress.add_task("attacks", total=None)

        def show(label: str, done: int, total: int) -> None:
            progress.update(task, description=label, completed=done, total=total)
            log.info(f"[{done}/{total} batches] {label}")  # the bar does not reach log files

        report = evaluate_robustness(
            model, batches, entries, settings, budget=eps, headline=HEADLINE, progress=show
        )
    meta = {
        "model": described,
        "data": cfg.data._target_,
        "split": "test",
        "threat_model": f"{entries[-1].norm}, eps {format_eps(eps)}",
        "device": str(device),
        "seconds": round(time.perf_counter() - started, 1),
        "versions": package_versions(),
    }
    out_dir = Path(cfg.paths.output_dir)
    files = write_report(report, out_dir, meta, norm=entries[-1].norm)
    log_report(loggers, report, files, out_dir)
    print_summary(report, files)
    return {**meta, **report.as_dict(), "files": {k: str(v) for k, v in files.items()}}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Entry used by `eval.py`: user errors become one line on stderr and exit status 2; a
    SUSPECT verdict exits with status 3 (`fail_on_suspect`), so scripts and CI can gate on it."""
    try:
        if cfg.get("extras", {}).get("print_config", False):
            print_config_tree(cfg)
        result = evaluate(cfg)
    except AdvlabError as err:
        print(f"advlab: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        close_loggers()
    if cfg.get("fail_on_suspect", True) and result["verdict"] != "TRUSTWORTHY":
        raise SystemExit(SUSPECT_EXIT)
    return result
