"""Checks that run before training, so a bad combination fails in a second with one line."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer

from advlab.data import VisionDataModule
from advlab.errors import ConfigError
from advlab.utils import get_logger

log = get_logger(__name__)


def check_model_fits_data(model: LightningModule, datamodule: LightningDataModule) -> None:
    """Run a 2-image batch shaped like the data through the model; explain a mismatch."""
    dims = getattr(datamodule, "dims", None)
    if dims is None:
        return
    num_classes = getattr(datamodule, "num_classes", None)
    net_name = type(getattr(model, "net", model)).__name__
    first = next(iter(model.parameters()), None)
    probe = torch.rand(2, *dims, device=first.device if first is not None else "cpu")
    try:
        with torch.no_grad():
            logits = model(probe)
    except (RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0][:160]
        raise ConfigError(
            f"model.net ({net_name}) does not fit {datamodule.name} images of shape "
            f"{tuple(dims)} (channels, height, width): {reason}. Pick a net for this data "
            f"(MNIST: model/net=small_cnn, CIFAR-10: model/net=preact_resnet18)"
        ) from err
    if num_classes is not None and (logits.ndim != 2 or logits.shape[1] != num_classes):
        raise ConfigError(
            f"model.net ({net_name}) returns logits of shape {tuple(logits.shape)} but "
            f"{datamodule.name} has {num_classes} classes"
        )


def check_batch_divides(datamodule: LightningDataModule, trainer: Trainer) -> None:
    """The global batch size must split evenly over all processes (checked again in setup)."""
    if isinstance(datamodule, VisionDataModule):
        datamodule.per_device_batch_size(trainer.world_size, datamodule.hparams.batch_size)


def check_manual_optimization_fits_trainer(model: LightningModule, trainer: Trainer) -> None:
    """Models that step their own optimizers (GANs, model.method=free) cannot have Lightning
    clip or accumulate their gradients; Lightning says so only once fit starts, in a traceback."""
    if model.automatic_optimization:
        return
    why = f"{type(model).__name__} steps its optimizers itself (manual optimization)"
    if trainer.gradient_clip_val:
        raise ConfigError(
            f"trainer.gradient_clip_val={trainer.gradient_clip_val}: {why}, so Lightning cannot "
            f"clip its gradients; remove it"
        )
    if trainer.accumulate_grad_batches > 1:
        raise ConfigError(
            f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches}: {why}, so "
            f"Lightning cannot accumulate its gradients; remove it"
        )


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")


def check_monitored_metrics_are_measured(model: LightningModule, callbacks: list[Callback]) -> None:
    """A callback that monitors the robust accuracy needs a model that measures it.

    Without this, `model.val_attack=null` trains a whole epoch and then ModelCheckpoint stops
    the run with a traceback about a missing key.
    """
    hparams = getattr(model, "hparams", {})
    if "val_attack" not in hparams or hparams["val_attack"] is not None:
        return
    for callback in callbacks:
        monitor = getattr(callback, "monitor", None)
        if isinstance(monitor, str) and monitor.startswith("val/robust_acc"):
            raise ConfigError(
                f"{type(callback).__name__} monitors {monitor}, which model.val_attack=null "
                f"does not measure: monitor val/acc instead "
                f"(callbacks.model_checkpoint.monitor=val/acc, as experiment=mnist_clean does)"
            )


def warn_off_threat_model(model: LightningModule, datamodule: LightningDataModule) -> list[str]:
    """One warning per attack of the model whose budget is not the data's threat model.

    Every attack config reads its eps from `data.threat_model`, so a different budget comes from
    an explicit override: legitimate, but worth a line in the log next to the numbers it makes.
    """
    threat = getattr(datamodule, "threat_model", None)
    configs = getattr(model, "attack_configs", dict)()
    if threat is None:
        return []
    warnings = []
    for where, cfg in configs.items():
        eps, norm = cfg.get("eps"), cfg.get("norm")
        if eps is not None and norm == threat.norm and abs(float(eps) - threat.eps) > 1e-9:
            warnings.append(
                f"{where} attacks at {norm} eps {float(eps):.4g}, not the data's threat model "
                f"({threat}): its numbers are not at the data's budget"
            )
    for line in warnings:
        log.warning(line)
    return warnings
