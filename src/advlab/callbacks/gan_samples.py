"""A grid of generated images from a fixed noise batch every epoch: PNG in the run dir + W&B."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from torchvision.utils import make_grid, save_image


class GANSampleGrid(Callback):
    """Every `every_n_epochs`, draw `pl_module.fixed_noise` through `pl_module.generate` (rank 0).

    The same noise every epoch shows how training moves the samples. A conditional GAN draws
    `pl_module.fixed_labels` (every class in turn), one class per column. The grid is saved as
    `<dirpath>/epoch_XXX.png` and logged to every WandbLogger under `samples`.

    Args:
        dirpath: folder for the PNGs (None: no files, W&B only).
        every_n_epochs: epochs between grids.
    """

    def __init__(self, dirpath: str | None = None, every_n_epochs: int = 1) -> None:
        super().__init__()
        self.dirpath = Path(dirpath) if dirpath else None
        self.every_n_epochs = every_n_epochs

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        if not trainer.is_global_zero or (epoch + 1) % self.every_n_epochs:
            return
        labels = getattr(pl_module, "fixed_labels", None)
        images = pl_module.generate(pl_module.fixed_noise, labels).cpu()
        columns = pl_module.hparams.num_classes if labels is not None else int(len(images) ** 0.5)
        grid = make_grid(images, nrow=max(1, columns), padding=2, pad_value=1.0)
        if self.dirpath is not None:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            save_image(grid, self.dirpath / f"epoch_{epoch:03d}.png")
        pixels = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    "samples", [pixels], step=trainer.global_step, caption=[f"epoch {epoch}"]
                )
