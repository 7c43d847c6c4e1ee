"""AdvGAN's examples every epoch: clean | adversarial | perturbation, as PNG and W&B images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from advlab.callbacks.adversarial_media import adversarial_strips
from advlab.evaluation.measure import attack_batch

GAP = 2  # white pixels between the rows of the PNG


class AdvGANGrid(Callback):
    """After every `every_n_epochs` validation, on rank 0: the first `num_images` validation images,
    their AdvGAN versions (`pl_module.perturb`) and the perturbation (grey = unchanged pixel),
    captioned with the target's predictions.

    The same images every epoch show how training moves the perturbations. Saved as
    `<dirpath>/epoch_XXX.png` (one row per image) and logged to every WandbLogger under `key`.

    Args:
        dirpath: folder for the PNGs (None: no files, W&B only).
        num_images: images shown (from the first validation batch).
        every_n_epochs: epochs between grids.
        key: W&B image key.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        num_images: int = 8,
        every_n_epochs: int = 1,
        key: str = "val/adversarial_examples",
    ) -> None:
        super().__init__()
        self.dirpath = Path(dirpath) if dirpath else None
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self.key = key
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def _due(self, trainer: Trainer) -> bool:
        return (
            trainer.is_global_zero
            and not trainer.sanity_checking
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and self._due(trainer):
            with torch.inference_mode(False):  # plain tensors, whatever mode validation ran in
                self._batch = (batch[0][: self.num_images].clone(),
                               batch[1][: self.num_images].clone())  # fmt: skip

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._batch is None or not self._due(trainer):
            return
        x, y = self._batch
        self._batch = None
        outcome = attack_batch(
            pl_module.target,
            lambda images, _: pl_module.perturb(images),
            x,
            y,
            pl_module.hparams.eps,
            "Linf",
            where="callbacks.advgan_grid",
        )
        strips, captions = adversarial_strips(outcome, self.num_images)
        epoch = trainer.current_epoch
        if self.dirpath is not None:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_stack_rows(strips)).save(self.dirpath / f"epoch_{epoch:03d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(self.key, strips, step=trainer.global_step, caption=captions)


def _stack_rows(strips: list[np.ndarray]) -> np.ndarray:
    """uint8 strips (H, W[, 3]) one under the other, with white gaps."""
    gap = np.full((GAP, *strips[0].shape[1:]), 255, dtype=np.uint8)
    rows = [part for strip in strips for part in (strip, gap)][:-1]
    return np.concatenate(rows, axis=0)
