"""MNIST: 28x28 grey digits, read by torchvision from the four IDX files."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import MNIST

from advlab.data.vision import VisionDataModule


class MNISTDataModule(VisionDataModule):
    """MNIST digits as uint8 tensors; see `VisionDataModule` for the arguments."""

    name = "MNIST"
    dims = (1, 28, 28)
    num_classes = 10
    fix_hint = "copy train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (un-gzipped) into <data_dir>/MNIST/raw/"

    def required_files(self) -> list[Path]:
        raw = self.data_dir / "MNIST" / "raw"
        return [raw / Path(url).name.removesuffix(".gz") for url, _md5 in MNIST.resources]

    def _torchvision_dataset(self, train: bool, download: bool = False) -> MNIST:
        return MNIST(str(self.data_dir), train=train, download=download)

    def _to_tensors(self, dataset: MNIST) -> tuple[torch.Tensor, torch.Tensor]:
        return dataset.data.unsqueeze(1).contiguous(), dataset.targets.long()
