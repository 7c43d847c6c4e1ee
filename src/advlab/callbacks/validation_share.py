"""This process's share of the first validation images: what the per-epoch evaluation callbacks
(attack suite, approximate certification) work on, taken from the batches as they pass."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class ValidationShareCallback(Callback):
    """Keeps this rank's share of the first `num_samples` validation images in epochs where
    `_due(trainer)` holds.

    Lightning deals validation items to ranks round-robin (rank r gets items r, r + W, ...), so
    each rank keeps the ones below `num_samples` dealt to it: counts summed over ranks are
    exactly the single-process numbers. No extra data loading happens.
    """

    def __init__(self, num_samples: int) -> None:
        super().__init__()
        self.num_samples = num_samples
        self._images: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._quota = 0

    def _due(self, trainer: Trainer) -> bool:
        raise NotImplementedError

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._images, self._labels = [], []
        self._quota = len(range(trainer.global_rank, self.num_samples, trainer.world_size))

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        kept = sum(len(y) for y in self._labels)
        if dataloader_idx != 0 or kept >= self._quota or not self._due(trainer):
            return
        self._images.append(batch[0][: self._quota - kept].detach())
        self._labels.append(batch[1][: self._quota - kept].detach())

    def kept(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(images, labels) kept this epoch as plain tensors, or None when none were."""
        if not self._labels:
            return None
        with torch.inference_mode(False):  # plain tensors, whatever mode validation ran in
            return torch.cat([t.clone() for t in self._images]), torch.cat(
                [t.clone() for t in self._labels]
            )
