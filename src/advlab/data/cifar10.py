"""CIFAR-10: 32x32 colour images, read by torchvision from the python pickle batches."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import CIFAR10, cifar

from advlab.data.vision import VisionDataModule


class CIFAR10DataModule(VisionDataModule):
    """CIFAR-10 as uint8 tensors; see `VisionDataModule` for the arguments.

    torchvision verifies the md5 sum of every batch file; a corrupt file is reported by it.
    """

    name = "CIFAR-10"
    dims = (3, 32, 32)
    num_classes = 10
    fix_hint = "extract cifar-10-python.tar.gz so that <data_dir>/cifar-10-batches-py/ holds data_batch_1..5, test_batch and batches.meta"

    def required_files(self) -> list[Path]:
        folder = self.data_dir / CIFAR10.base_folder
        names = [name for name, _md5 in CIFAR10.train_list + CIFAR10.test_list]
        return [folder / name for name in [*names, CIFAR10.meta["filename"]]]

    def file_problem(self, path: Path) -> str | None:
        """torchvision checks the md5 sums too, but its error does not say which file failed."""
        md5s = dict(CIFAR10.train_list + CIFAR10.test_list) | {
            CIFAR10.meta["filename"]: CIFAR10.meta["md5"]
        }
        problem = super().file_problem(path)
        if problem is None and not cifar.check_integrity(str(path), md5s.get(path.name)):
            problem = "fails its md5 check (a damaged or different file)"
        return problem

    def _torchvision_dataset(self, train: bool, download: bool = False) -> CIFAR10:
        return CIFAR10(str(self.data_dir), train=train, download=download)

    def _to_tensors(self, dataset: CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor(dataset.targets, dtype=torch.long)
