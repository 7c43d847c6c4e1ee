"""LightningDataModules that read the real torchvision files and keep images in memory."""

from advlab.data.cifar10 import CIFAR10DataModule
from advlab.data.fashion_mnist import FashionMNISTDataModule
from advlab.data.mnist import MNISTDataModule
from advlab.data.vision import VisionDataModule

__all__ = [
    "CIFAR10DataModule",
    "FashionMNISTDataModule",
    "MNISTDataModule",
    "VisionDataModule",
]
