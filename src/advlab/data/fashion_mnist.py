"""Fashion-MNIST: 28x28 grey photos of clothing in 10 classes, read by torchvision.

A drop-in for MNIST with the same file format and shape that is harder to classify and to make
robust; and the worked example of adding a dataset: one `VisionDataModule` subclass plus one
`configs/data/*.yaml`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import FashionMNIST

from advlab.data.vision import VisionDataModule


class FashionMNISTDataModule(VisionDataModule):
    """Fashion-MNIST as uint8 tensors; see `VisionDataModule` for the arguments."""

    name = "Fashion-MNIST"
    dims = (1, 28, 28)
    num_classes = 10
    fix_hint = "copy the four un-gzipped IDX files (train-images-idx3-ubyte, ...) into <data_dir>/FashionMNIST/raw/"

    def required_files(self) -> list[Path]:
        raw = self.data_dir / "FashionMNIST" / "raw"
        return [raw / Path(file).name.removesuffix(".gz") for file, _md5 in FashionMNIST.resources]

    def _torchvision_dataset(self, train: bool, download: bool = False) -> FashionMNIST:
        return FashionMNIST(str(self.data_dir), train=train, download=download)

    def _to_tensors(self, dataset: FashionMNIST) -> tuple[torch.Tensor, torch.Tensor]:
        return dataset.data.unsqueeze(1).contiguous(), dataset.targets.long()
