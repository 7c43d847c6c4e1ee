"""A best-checkpoint policy for a metric that is not logged every epoch (or at all)."""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class CheckpointIfMonitored(ModelCheckpoint):
    """ModelCheckpoint that does nothing in epochs where its `monitor` was not logged.

    GAN quality metrics (FID) exist only with a feature extractor and only every N epochs;
    Lightning's ModelCheckpoint raises when the monitored key is missing after validation.
    Without the metric no best checkpoint is kept; `last_checkpoint` still saves every epoch.
    """

    def _monitored_is_logged(self, trainer: Trainer) -> bool:
        return self.monitor is None or self.monitor in trainer.callback_metrics

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._monitored_is_logged(trainer):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._monitored_is_logged(trainer):
            super().on_validation_end(trainer, pl_module)
