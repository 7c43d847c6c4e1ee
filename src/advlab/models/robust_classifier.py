"""RobustClassifier: a LightningModule that trains a classifier with a training method."""

from __future__ import annotations

from typing import Any

import hydra
import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from advlab.attacks import attack_name, attack_norm, build_attack, check_within_budget
from advlab.attacks.build import validate_attack_config
from advlab.checkpoints import CLASSIFIER_HPARAMS, SafeCheckpointLoading
from advlab.errors import ConfigError
from advlab.methods import build_method
from advlab.models.networks import ConfigLike, build_net, num_classes_of, plain_config
from advlab.models.schedules import build_scheduler

EVAL_STAGES = ("val", "test")


class RobustClassifier(SafeCheckpointLoading, LightningModule):
    """A classifier (`net`) trained by a training method (`method`), with robust accuracy
    measured at validation and test.

    `forward(x)` takes images in [0, 1] and returns logits; the network normalizes inside, so
    every epsilon is in pixel units. Sub-configs are stored as plain dicts in the checkpoint,
    so `RobustClassifier.load_from_checkpoint(path)` rebuilds the model with no other argument.

    Args:
        net: config (`_target_` + arguments) of a classifier from `advlab.nets`.
        method: config of a training method from `advlab.methods` (`configs/method/`), with
            its own training attack.
        optimizer: `_partial_` optimizer config, called with the parameters.
        val_attack: attack for `val/robust_acc_<its name>` on the first `val_robust_batches`
            batches: a cheap proxy to watch training (PGD-10 by default).
        test_attack: attack for `test/robust_acc_<its name>` on the whole test split: the
            run's robust accuracy (official AutoAttack's APGD-CE + APGD-T by default).
        scheduler: optional `_partial_` LR scheduler config; `total_steps` is filled in for
            schedulers that take it (OneCycleLR), counted by the method.
        scheduler_interval: `step` or `epoch`.
        val_robust_batches: validation batches attacked per epoch (-1: all of them).
        channels_last: keep the network and batches in channels-last memory format (faster
            convolutions on recent GPUs and with oneDNN on CPUs).
        compile: `torch.compile` the network in place (`nn.Module.compile`: the state_dict
            keys and checkpoints stay those of the plain network).
    """

    checkpoint_hparams = CLASSIFIER_HPARAMS

    def __init__(
        self,
        net: ConfigLike,
        method: ConfigLike,
        optimizer: ConfigLike = None,
        val_attack: ConfigLike = None,
        test_attack: ConfigLike = None,
        scheduler: ConfigLike = None,
        scheduler_interval: str = "step",
        val_robust_batches: int = -1,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if scheduler_interval not in ("step", "epoch"):
            raise ConfigError(
                f"model.scheduler_interval={scheduler_interval!r} is not step or epoch"
            )
        if optimizer is None:
            raise ConfigError("model.optimizer is required (a _partial_ torch.optim config)")
        for stage, cfg in zip(EVAL_STAGES, (val_attack, test_attack), strict=True):
            if cfg is not None:
                validate_attack_config(cfg, where=f"model.{stage}_attack")
        self.method = build_method(method)
        # sub-configs as plain dicts: checkpoints load with weights_only=True
        configs = {"net": net, "method": method, "optimizer": optimizer, "scheduler": scheduler}
        configs |= {"val_attack": val_attack, "test_attack": test_attack}
        self.save_hyperparameters(
            {name: plain_config(cfg) for name, cfg in configs.items()}
            | {"scheduler_interval": scheduler_interval, "val_robust_batches": val_robust_batches}
            | {"channels_last": channels_last, "compile": compile}
        )
        self.net: nn.Module = build_net(self.hparams.net)
        self.automatic_optimization = not self.method.manual_optimization
        self._attacks: dict[str, Any] = {}

        num_classes = num_classes_of(self.net)
        # no per-step input checks in the hot loop (labels come from the DataModule)
        self.train_loss = MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_loss = MeanMetric()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_robust_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_robust_acc_best = MaxMetric()
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_robust_acc = MulticlassAccuracy(num_classes, average="micro")

    def configure_model(self) -> None:
        """Speed knobs, applied once on the training device; neither changes the math."""
        if self.hparams.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.net.compile()
            self._compiled = True

    def _memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """Batches in the network's memory format (a DataModule owns on_after_batch_transfer)."""
        if self.hparams.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images in [0, 1]."""
        return self.net(x)

    # ---- training -----------------------------------------------------------------------------
    def on_train_start(self) -> None:
        # drop what the sanity-check validation accumulated
        for metric in (self.val_loss, self.val_acc, self.val_robust_acc, self.val_robust_acc_best):
            metric.reset()

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        loss, logits = self.method.training_step(self, self._memory_format(x), y, batch_idx)
        self.train_loss(loss.detach())
        self.train_acc(logits.detach(), y)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.method.on_train_epoch_end(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = self.method.state_dict()
        if state:
            checkpoint["method_state"] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "method_state" in checkpoint:
            self.method.load_state_dict(checkpoint["method_state"])

    # ---- evaluation ---------------------------------------------------------------------------
    def attack(self, stage: str) -> Any | None:
        """The val or test attack, built once per device it is used on (torchattacks reads the
        model's device when it is constructed)."""
        cfg = self.hparams[f"{stage}_attack"]
        if cfg is None:
            return None
        key = f"{stage}@{self.device}"
        if key not in self._attacks:
            self._attacks[key] = build_attack(cfg, self.net, where=f"model.{stage}_attack")
        return self._attacks[key]

    def robust_metric(self, stage: str) -> str:
        """`<stage>/robust_acc_<attack name>`: every robust number says which attack made it."""
        return f"{stage}/robust_acc_{attack_name(self.hparams[f'{stage}_attack'])}"

    def attack_configs(self) -> dict[str, dict[str, Any]]:
        """Every attack config of the model, by where it is set (preflight compares budgets)."""
        found = {"model.method.attack": self.method.attack_config}
        found.update({f"model.{s}_attack": self.hparams[f"{s}_attack"] for s in EVAL_STAGES})
        return {where: cfg for where, cfg in found.items() if cfg is not None}

    def _robust_logits(self, stage: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Logits on the attack's examples, after checking they are inside its budget."""
        if torch.is_inference_mode_enabled():
            raise ConfigError("attacks need gradients: set trainer.inference_mode=false")
        cfg = self.hparams[f"{stage}_attack"]
        with torch.enable_grad():
            x_adv = self.attack(stage)(x, y)
        if "eps" in cfg:
            check_within_budget(x, x_adv, float(cfg["eps"]), attack_norm(cfg))
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
        name = self.robust_metric("val")
        self.log(name, robust_acc, prog_bar=True, sync_dist=True)
        self.log(f"{name}_best", self.val_robust_acc_best.compute(), sync_dist=True)
        self.val_robust_acc.reset()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        x = self._memory_format(x)
        self.test_acc(self(x), y)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)
        if self.hparams.test_attack is not None:
            self.test_robust_acc(self._robust_logits("test", x, y), y)
            self.log(self.robust_metric("test"), self.test_robust_acc, on_step=False, on_epoch=True)

    # ---- optimization -------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = hydra.utils.instantiate(self.hparams.optimizer)(params=self.parameters())
        if self.hparams.scheduler is None:
            return {"optimizer": optimizer}
        batches = int(self.trainer.estimated_stepping_batches)
        steps = self.method.optimizer_steps(batches, self.trainer.max_steps)
        scheduler = build_scheduler(self.hparams.scheduler, optimizer, steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval},
        }
