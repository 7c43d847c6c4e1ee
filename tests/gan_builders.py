"""Tiny GANs and classifiers, and their checkpoints, shared by the GAN and generated-data tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from advlab.models import GAN, RobustClassifier

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001, "betas": [0.5, 0.999]}
MNIST_SHAPE = (1, 28, 28)
TINY_CLASSIFIERS = {
    "mnist": {"_target_": "advlab.nets.SmallCNN", "channels": [4, 8], "hidden": 16},
    "cifar10": {"_target_": "advlab.nets.PreActResNet18", "width": 4},
}


def make_gan(image_shape=MNIST_SHAPE, **kwargs) -> GAN:
    torch.manual_seed(0)
    args = {
        "generator": {"_target_": "advlab.nets.DCGANGenerator", "width": 8},
        "discriminator": {"_target_": "advlab.nets.DCGANDiscriminator", "width": 8},
        "optimizer_g": ADAM,
        "optimizer_d": ADAM,
        "latent_dim": 16,
        "image_shape": image_shape,
        "grid_size": 4,
        **kwargs,
    }
    return GAN(**args)


def save_module(module: LightningModule, path: Path) -> Path:
    """The checkpoint `train.py` would write for `module` as it is (no training)."""
    trainer = Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0
    )
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


def save_classifier(net: dict, path: Path) -> Path:
    """An untrained model=robust checkpoint: enough to be a feature extractor in tests."""
    classifier = RobustClassifier(
        net=net, method={"_target_": "advlab.methods.Clean"}, optimizer=ADAM
    )
    return save_module(classifier, path)


class SaveFirstTrainingBatch(Callback):
    """Saves each process's first training batch as `<dirpath>/rank<r>.pt`, as the model sees it
    (after the DataModule's device-side transform): what a DDP test compares across ranks."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                             batch_idx: int) -> None:  # fmt: skip
        if batch_idx == 0:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            torch.save([t.cpu() for t in batch], self.dirpath / f"rank{trainer.global_rank}.pt")
