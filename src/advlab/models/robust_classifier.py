"""RobustClassifier: a LightningModule that trains a classifier clean or adversarially."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import hydra
import torch
from lightning.pytorch import LightningModule
from omegaconf import DictConfig
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from advlab.attacks import EpsilonSchedule, build_attack
from advlab.attacks.build import as_plain_dict, validate_attack_config
from advlab.checkpoints import CLASSIFIER_HPARAMS, SafeCheckpointLoading
from advlab.errors import ConfigError
from advlab.models.free_step import check_free_settings, free_adversarial_step
from advlab.models.objectives import OBJECTIVES
from advlab.models.regularizers import AdaptiveLinearityWeight, local_linearity_error

LINEARITY_SCHEDULES = ("constant", "adaptive")
# `free` is no objective function: it runs its own optimizer loop (models/free_step.py)
METHODS = (*OBJECTIVES, "free")

ConfigLike = Mapping[str, Any] | DictConfig | None


def _plain(cfg: ConfigLike) -> dict[str, Any] | None:
    """What goes into the checkpoint, so reloading needs no Hydra state."""
    return None if cfg is None else as_plain_dict(cfg)


class RobustClassifier(SafeCheckpointLoading, LightningModule):
    """A classifier trained with `method` against the attack `train_attack`.

    `forward(x)` takes images in [0, 1] and returns logits; the network normalizes inside, so
    every epsilon is in pixel units. Sub-configs are stored as plain dicts in the checkpoint,
    so `RobustClassifier.load_from_checkpoint(path)` rebuilds the model with no other argument.

    Args:
        net: config (`_target_` + arguments) of a classifier from `advlab.nets`.
        method: `clean`, `pgd` (Madry et al.), `fgsm_rs` (Wong et al., "fast"), `nfgsm` (de Jorge
            et al.), `trades`, or `free` (Shafahi et al.: each batch replayed `free_replays`
            times, one optimizer step and one perturbation step per forward/backward pass;
            needs attack/free as `train_attack`).
        train_attack: attack config used to craft training examples (ignored by `clean`).
        val_attack: attack for `val/robust_acc` (on the first `val_robust_batches` batches).
        test_attack: attack for `test/robust_acc` (on the whole test split).
        optimizer: `_partial_` optimizer config, called with the parameters.
        scheduler: optional `_partial_` LR scheduler config; `total_steps` is filled in for
            schedulers that take it (OneCycleLR).
        scheduler_interval: `step` or `epoch`.
        trades_beta: weight of the TRADES robustness term.
        adversarial_fraction: share of each batch that is attacked in `pgd`, `fgsm_rs` and
            `nfgsm` (the rest is trained on clean: more clean accuracy, less robustness).
        eps_warmup_epochs: epochs over which the training budget grows linearly from 0.
        linearity_weight: weight of the local-linearity penalty (ELLE, `regularizers.py`) added
            to the training loss at the training attack's current eps; 0 = off. It keeps
            single-step training (`fgsm_rs`) from masking gradients.
        linearity_fraction: share of each batch the penalty is computed on (its cost is one
            forward/backward pass on 3x that many images; batches are shuffled, so the first
            images are a random subset).
        linearity_schedule: `constant` (ELLE: always `linearity_weight`) or `adaptive`
            (ELLE-A: 0 until the penalty spikes, then `linearity_weight`, decaying after).
        linearity_decay: per-step decay of the adaptive weight after a spike.
        linearity_sensitivity: a spike is a penalty above the mean of all earlier steps plus
            this many standard deviations.
        free_replays: `free` only: times each batch is replayed (optimizer steps per batch);
            a per-step LR schedule counts replays.
        val_robust_batches: validation batches attacked per epoch (-1: all of them).
        channels_last: keep the network and batches in channels-last memory format (faster
            convolutions on recent GPUs, and for SmallCNN on the CPU; `model/robust.yaml` turns
            it on).
        compile: `torch.compile` the network in place (`nn.Module.compile`: the state_dict
            keys and checkpoints stay those of the plain network).
    """

    checkpoint_hparams = CLASSIFIER_HPARAMS

    def __init__(
        self,
        net: ConfigLike,
        method: str = "pgd",
        train_attack: ConfigLike = None,
        val_attack: ConfigLike = None,
        test_attack: ConfigLike = None,
        optimizer: ConfigLike = None,
        scheduler: ConfigLike = None,
        scheduler_interval: str = "step",
        trades_beta: float = 6.0,
        adversarial_fraction: float = 1.0,
        eps_warmup_epochs: float = 0.0,
        linearity_weight: float = 0.0,
        linearity_fraction: float = 1.0,
        linearity_schedule: str = "constant",
        linearity_decay: float = 0.99,
        linearity_sensitivity: float = 2.0,
        free_replays: int = 4,
        val_robust_batches: int = -1,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"model.method={method!r} is not one of {', '.join(METHODS)}")
        if method != "clean" and train_attack is None:
            raise ConfigError(f"model.method={method} needs model.train_attack (an attack/ config)")
        if scheduler_interval not in ("step", "epoch"):
            raise ConfigError(
                f"model.scheduler_interval={scheduler_interval!r} is not step or epoch"
            )
        if linearity_weight < 0:
            raise ConfigError(f"model.linearity_weight must be >= 0, got {linearity_weight}")
        if linearity_weight > 0 and method == "clean":
            raise ConfigError(
                "model.linearity_weight needs a training attack (its eps); method=clean has none"
            )
        if not 0 < linearity_fraction <= 1:
            raise ConfigError(
                f"model.linearity_fraction must be in (0, 1], got {linearity_fraction}"
            )
        if not 0 < adversarial_fraction <= 1:
            raise ConfigError(
                f"model.adversarial_fraction must be in (0, 1], got {adversarial_fraction}"
            )
        if adversarial_fraction < 1 and method in ("clean", "trades", "free"):
            raise ConfigError(
                f"model.adversarial_fraction applies to pgd, fgsm_rs and nfgsm, not {method}"
            )
        if linearity_schedule not in LINEARITY_SCHEDULES:
            raise ConfigError(
                f"model.linearity_schedule={linearity_schedule!r} is not one of "
                f"{', '.join(LINEARITY_SCHEDULES)}"
            )
        if not 0 < linearity_decay <= 1:
            raise ConfigError(f"model.linearity_decay must be in (0, 1], got {linearity_decay}")
        if linearity_sensitivity < 0:
            raise ConfigError(
                f"model.linearity_sensitivity must be >= 0, got {linearity_sensitivity}"
            )
        if optimizer is None:
            raise ConfigError("model.optimizer is required (a _partial_ torch.optim config)")
        check_free_settings(method, train_attack, free_replays, linearity_weight)
        for name, cfg in (
            ("train_attack", train_attack),
            ("val_attack", val_attack),
            ("test_attack", test_attack),
        ):
            if cfg is not None:
                validate_attack_config(cfg, where=f"model.{name}")
        self.save_hyperparameters(
            {
                "net": _plain(net),
                "method": method,
                "train_attack": _plain(train_attack) if method != "clean" else None,
                "val_attack": _plain(val_attack),
                "test_attack": _plain(test_attack),
                "optimizer": _plain(optimizer),
                "scheduler": _plain(scheduler),
                "scheduler_interval": scheduler_interval,
                "trades_beta": trades_beta,
                "adversarial_fraction": adversarial_fraction,
                "eps_warmup_epochs": eps_warmup_epochs,
                "linearity_weight": linearity_weight,
                "linearity_fraction": linearity_fraction,
                "linearity_schedule": linearity_schedule,
                "linearity_decay": linearity_decay,
                "linearity_sensitivity": linearity_sensitivity,
                "free_replays": free_replays,
                "val_robust_batches": val_robust_batches,
                "channels_last": channels_last,
                "compile": compile,
            }
        )
        self.net: nn.Module = hydra.utils.instantiate(self.hparams.net)
        self.objective = OBJECTIVES.get(method)
        # free AT takes several optimizer steps per batch, so it drives the optimizer itself
        self.automatic_optimization = method != "free"
        self._attacks: dict[str, Any] = {}
        self._warmup: EpsilonSchedule | None = None
        self.adaptive_linearity: AdaptiveLinearityWeight | None = None
        if linearity_schedule == "adaptive" and linearity_weight > 0:
            self.adaptive_linearity = AdaptiveLinearityWeight(
                linearity_weight, linearity_decay, linearity_sensitivity
            )

        self.train_loss = MeanMetric()
        num_classes = getattr(self.net, "num_classes", None) or self._infer_num_classes()
        # no per-step input checks in the hot loop (labels come from the DataModule)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_loss = MeanMetric()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_robust_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_robust_acc_best = MaxMetric()
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_robust_acc = MulticlassAccuracy(num_classes, average="micro")

    def _infer_num_classes(self) -> int:
        last_linear = [m for m in self.net.modules() if isinstance(m, nn.Linear)]
        if not last_linear:
            raise ConfigError("cannot tell the number of classes of model.net (no nn.Linear layer)")
        return last_linear[-1].out_features

    def configure_model(self) -> None:
        """Speed knobs, applied once on the training device; neither changes the math."""
        if self.hparams.get("channels_last"):
            self.net.to(memory_format=torch.channels_last)
        if self.hparams.get("compile") and not getattr(self, "_compiled", False):
            self.net.compile()
            self._compiled = True

    def _memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """Batches in the network's memory format (a DataModule owns on_after_batch_transfer)."""
        if self.hparams.get("channels_last"):
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images in [0, 1]."""
        return self.net(x)

    # ---- attacks ------------------------------------------------------------------------------
    def attack(self, stage: str) -> Any | None:
        """The attack of `stage` (train/val/test), built once per device it is used on.

        torchattacks reads the model's device when it is constructed, so the attack is built
        lazily, after Lightning has moved the model.
        """
        cfg = self.hparams.get(f"{stage}_attack")
        if cfg is None:
            return None
        key = f"{stage}@{self.device}"
        if key not in self._attacks:
            self._attacks[key] = build_attack(cfg, self.net, where=f"model.{stage}_attack")
            if stage == "train":
                self._warmup = EpsilonSchedule(self._attacks[key], self.hparams.eps_warmup_epochs)
        return self._attacks[key]

    @staticmethod
    def _require_grad_mode() -> None:
        if torch.is_inference_mode_enabled():
            raise ConfigError("attacks need gradients: set trainer.inference_mode=false")

    # ---- training -----------------------------------------------------------------------------
    def on_train_start(self) -> None:
        # Drop what the sanity-check validation accumulated.
        self.val_loss.reset()
        self.val_acc.reset()
        self.val_robust_acc.reset()
        self.val_robust_acc_best.reset()

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        x = self._memory_format(x)
        attack = self.attack("train")
        if self._warmup is not None and self.hparams.eps_warmup_epochs > 0:
            progress = self.current_epoch + batch_idx / max(self.trainer.num_training_batches, 1)
            self.log(
                "train/eps_factor", self._warmup.update(progress), on_step=True, on_epoch=False
            )
        if self.hparams.method == "free":
            loss, logits = free_adversarial_step(
                self,
                attack,
                x,
                y,
                replays=self.hparams.free_replays,
                step_scheduler=self.hparams.scheduler_interval == "step",
            )
            self._log_training(loss, logits, y)
            return loss
        loss, logits = self.objective(
            self.net,
            attack,
            x,
            y,
            beta=self.hparams.trades_beta,
            adversarial_fraction=self.hparams.adversarial_fraction,
        )
        if self.hparams.linearity_weight > 0:
            lin_err = local_linearity_error(
                self.net, x, y, float(attack.eps), self.hparams.linearity_fraction
            )
            self.log("train/lin_err", lin_err.detach(), on_step=False, on_epoch=True)
            loss = loss + self._linearity_weight(lin_err) * lin_err
        self._log_training(loss, logits, y)
        return loss

    def _log_training(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.train_loss(loss.detach())
        self.train_acc(logits.detach(), y)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_train_epoch_end(self) -> None:
        # under manual optimization (free) Lightning leaves every scheduler step to the module
        if not self.automatic_optimization and self.hparams.scheduler_interval == "epoch":
            scheduler = self.lr_schedulers()
            if scheduler is not None:
                scheduler.step()

    def _linearity_weight(self, lin_err: torch.Tensor) -> float | torch.Tensor:
        if self.adaptive_linearity is None:
            return self.hparams.linearity_weight
        value = lin_err.detach()
        # every process must switch the weight on together: they watch the same (mean) penalty
        if self._trainer is not None and self.trainer.world_size > 1:
            value = self.trainer.strategy.reduce(value, reduce_op="mean")
        weight = self.adaptive_linearity.step(value)
        self.log("train/lin_weight", weight, on_step=False, on_epoch=True)
        return weight

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.adaptive_linearity is not None:
            checkpoint["adaptive_linearity"] = self.adaptive_linearity.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.adaptive_linearity is not None and "adaptive_linearity" in checkpoint:
            self.adaptive_linearity.load_state_dict(checkpoint["adaptive_linearity"])

    # ---- evaluation ---------------------------------------------------------------------------
    def _robust_logits(self, stage: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._require_grad_mode()
        with torch.enable_grad():
            x_adv = self.attack(stage)(x, y)
        return self(x_adv)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        x = self._memory_format(x)
        logits = self(x)
        self.val_loss(torch.nn.functional.cross_entropy(logits, y))
        self.val_acc(logits, y)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)
        limit = self.hparams.val_robust_batches
        if self.hparams.val_attack is not None and (limit < 0 or batch_idx < limit):
            self.val_robust_acc(self._robust_logits("val", x, y), y)

    def on_validation_epoch_end(self) -> None:
        if self.hparams.val_attack is None or self.val_robust_acc.update_count == 0:
            return
        robust_acc = self.val_robust_acc.compute()
        self.val_robust_acc_best(robust_acc)
        self.log("val/robust_acc", robust_acc, prog_bar=True, sync_dist=True)
        self.log(
            "val/robust_acc_best", self.val_robust_acc_best.compute(), prog_bar=True, sync_dist=True
        )
        self.val_robust_acc.reset()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        x = self._memory_format(x)
        self.test_acc(self(x), y)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)
        if self.hparams.test_attack is not None:
            self.test_robust_acc(self._robust_logits("test", x, y), y)
            self.log("test/robust_acc", self.test_robust_acc, on_step=False, on_epoch=True)

    # ---- optimization -------------------------------------------------------------------------
    def _optimizer_steps(self) -> int:
        """Optimizer steps of the whole run, for schedules that need the total (OneCycleLR)."""
        estimated = int(self.trainer.estimated_stepping_batches)
        if self.hparams.method != "free":
            return estimated
        # free AT steps once per replay. `trainer.max_steps` counts optimizer steps, but the
        # Trainer only checks it between batches, so a run ends on a whole batch of replays
        replays = self.hparams.free_replays
        total = estimated * replays
        max_steps = getattr(self.trainer, "max_steps", -1)  # Lightning: -1 when unset
        if max_steps <= 0:
            return total
        return min(total, math.ceil(max_steps / replays) * replays)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = hydra.utils.instantiate(self.hparams.optimizer)(params=self.parameters())
        if self.hparams.scheduler is None:
            return {"optimizer": optimizer}
        make_scheduler = hydra.utils.instantiate(self.hparams.scheduler)
        extra = {}
        func = getattr(make_scheduler, "func", make_scheduler)
        keywords = getattr(make_scheduler, "keywords", {})
        if "total_steps" in inspect.signature(func).parameters and "total_steps" not in keywords:
            extra["total_steps"] = self._optimizer_steps()
        scheduler = make_scheduler(optimizer=optimizer, **extra)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval},
        }
