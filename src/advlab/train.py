"""Build data, model, callbacks, loggers and Trainer from the config, then fit and test."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf

from advlab.checkpoints import lightning_parts, read_checkpoint, trust_targets
from advlab.errors import AdvlabError, ConfigError
from advlab.preflight import (
    check_accelerator_available,
    check_batch_divides,
    check_choice,
    check_manual_optimization_fits_trainer,
    check_model_fits_data,
    check_monitored_metrics_are_measured,
    warn_off_threat_model,
)
from advlab.utils import get_logger, instantiate, instantiate_callbacks, instantiate_loggers
from advlab.utils.config_tree import print_config_tree
from advlab.utils.ddp_launch import separate_ddp_jobs, use_job_command_for_ddp_children

log = get_logger(__name__)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str) -> str | None:
    """`last` means `<run dir>/checkpoints/last.ckpt`; any other value is a path that must exist."""
    if ckpt_path is None:
        return None
    path = (
        Path(output_dir) / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    )
    if not path.is_file():
        hint = " (pass hydra.run.dir=<the run's dir> to resume it)" if ckpt_path == "last" else ""
        raise ConfigError(f"ckpt_path={ckpt_path}: no checkpoint at {path}{hint}")
    return str(path)


def _checkpoint_to_test(choice: str, trainer: Trainer) -> str | None:
    """`best`: the monitored best checkpoint when one was kept; `last`: the final weights."""
    checkpoint = trainer.checkpoint_callback
    if choice == "best" and checkpoint is not None and getattr(checkpoint, "best_model_path", ""):
        return checkpoint.best_model_path
    return None


def load_weights(model: LightningModule, path: str, where: str) -> None:
    """Load a checkpoint's `state_dict` into `model`: exactly what `load_from_checkpoint` gives.

    Not `Trainer.test(ckpt_path=...)`: with EMAWeightAveraging on, that restores the raw
    (non-averaged) weights, while `state_dict` holds the averaged ones users reload.
    """
    checkpoint = read_checkpoint(path, where, map_location=model.device)
    _, state = lightning_parts(checkpoint, path, where, required=())
    model.load_state_dict(state)


def _strategy_for(model: LightningModule, strategy: Any) -> dict[str, str]:
    """`strategy=ddp*` -> its `_find_unused_parameters_true` variant for models that need it.

    A GAN's discriminator update leaves the generator without gradients and vice versa; plain
    DDP fails on that at the first step. Returns the Trainer keyword to override, if any.
    """
    if not getattr(model, "ddp_find_unused_parameters", False):
        return {}
    if strategy not in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
        return {}
    log.info(
        f"trainer.strategy={strategy} -> {strategy}_find_unused_parameters_true for "
        f"{type(model).__name__} (each optimizer step leaves some parameters unused)"
    )
    return {"strategy": f"{strategy}_find_unused_parameters_true"}


def _log_hyperparameters(cfg: DictConfig, model: LightningModule, loggers: list[Logger]) -> None:
    """Send the whole resolved config plus parameter counts to every logger."""
    if not loggers:
        return
    params = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(params, dict)
    params["model/params_total"] = sum(p.numel() for p in model.parameters())
    params["model/params_trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for logger in loggers:
        logger.log_hyperparams(params)


def close_loggers(discard: bool = False) -> None:
    """Finish the W&B run so that multiruns do not append to each other.

    `discard`: the run stopped on a user error, so its offline W&B run holds nothing worth
    syncing; delete it rather than leave an empty run behind.
    """
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            discard_dir = Path(wandb.run.dir).parent if discard and wandb.run.offline else None
            wandb.finish()
            if discard_dir is not None and discard_dir.name.startswith("offline-run-"):
                shutil.rmtree(discard_dir, ignore_errors=True)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (and optionally test) the configured model; returns the final metrics as floats."""
    check_choice("test_ckpt", cfg.get("test_ckpt", "best"), ("best", "last"))
    trust_targets(cfg.get("trusted_targets"))
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir)
    if ckpt_path and cfg.get("train", True):
        # a bad file is one line before anything is built; inside fit it would be a traceback
        lightning_parts(read_checkpoint(ckpt_path, "ckpt_path"), ckpt_path, "ckpt_path", ())
    check_accelerator_available(cfg.trainer.get("accelerator"))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))

    log.info(f"Data <{cfg.data._target_}>")
    datamodule: LightningDataModule = instantiate(cfg.data)
    if not getattr(datamodule, "missing_files", list)():  # files to download: prepare_data's job
        datamodule.setup("fit")  # damaged files fail in one line before any logger writes
    log.info(f"Model <{cfg.model._target_}>")
    model: LightningModule = instantiate(cfg.model)
    if hasattr(model, "configure_for_data"):  # GAN, AdvGAN: shape check, evaluation helpers
        model.configure_for_data(datamodule)
    else:
        check_model_fits_data(model, datamodule)
    warn_off_threat_model(model, datamodule)

    callbacks: list[Callback] = instantiate_callbacks(cfg.get("callbacks"))
    loggers: list[Logger] = instantiate_loggers(cfg.get("logger"))
    if not loggers:  # LearningRateMonitor refuses to run without a logger; logger=none is valid
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    check_monitored_metrics_are_measured(model, callbacks)
    strategy = _strategy_for(model, cfg.trainer.get("strategy"))
    use_job_command_for_ddp_children()  # DDP ranks > 0 re-run this job, not the whole sweep
    trainer: Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, **strategy
    )
    check_batch_divides(datamodule, trainer)
    check_manual_optimization_fits_trainer(model, trainer)
    _log_hyperparameters(cfg, model, loggers)

    if cfg.get("train", True):  # weights_only: resuming unpickles tensors and plain values only
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("test", False) and not is_overridden("test_step", model):
        log.info(f"test=true skipped: {type(model).__name__} has no test step")
    elif cfg.get("test", False):
        test_ckpt = (
            _checkpoint_to_test(cfg.get("test_ckpt", "best"), trainer)
            if cfg.get("train", True)
            else ckpt_path
        )
        log.info(f"Testing checkpoint: {test_ckpt or 'final weights'}")
        if test_ckpt:
            load_weights(model, test_ckpt, "test_ckpt" if cfg.get("train", True) else "ckpt_path")
        trainer.test(model=model, datamodule=datamodule)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return metrics


def run(cfg: DictConfig) -> float | None:
    """Entry used by `train.py`: print the config, train, always close loggers.

    User errors (AdvlabError) become one line on stderr and exit status 2.
    """
    user_error = False  # a crash or preemption keeps its W&B run: it holds the logs up to then
    try:
        if cfg.get("extras", {}).get("print_config", False):
            print_config_tree(cfg)
        with separate_ddp_jobs():
            metrics = train(cfg)
    except AdvlabError as err:
        user_error = True
        print(f"advlab: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        close_loggers(discard=user_error)
    objective = cfg.get("optimized_metric")
    if objective and objective in metrics:
        return metrics[objective]
    return None
