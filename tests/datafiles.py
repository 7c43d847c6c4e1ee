"""Write tiny datasets in the real on-disk formats, so tests exercise torchvision's parsers."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _class_patterns(
    rng: np.random.Generator, shape: tuple[int, ...], classes: int = 10
) -> np.ndarray:
    """One fixed random uint8 pattern per class: a learnable, deterministic toy problem."""
    return rng.integers(0, 256, size=(classes, *shape), dtype=np.uint8)


def _noisy_samples(
    rng: np.random.Generator, patterns: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    noise = rng.integers(-40, 41, size=(len(labels), *patterns.shape[1:]))
    return np.clip(patterns[labels].astype(np.int64) + noise, 0, 255).astype(np.uint8)


def _write_idx(raw: Path, n_train: int, n_test: int, seed: int) -> None:
    """The four IDX files of the MNIST format (big-endian magic, sizes, then raw uint8)."""
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patterns = _class_patterns(rng, (28, 28))
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        images = _noisy_samples(rng, patterns, labels)
        image_file, label_file = MNIST_FILES[split]
        (raw / image_file).write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / label_file).write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


def write_mnist(root: Path, n_train: int = 96, n_test: int = 48, seed: int = 0) -> Path:
    """IDX files under <root>/MNIST/raw, as torchvision.datasets.MNIST reads them."""
    _write_idx(root / "MNIST" / "raw", n_train, n_test, seed)
    return root


def write_fashion_mnist(root: Path, n_train: int = 64, n_test: int = 32, seed: int = 1) -> Path:
    """IDX files under <root>/FashionMNIST/raw, as torchvision.datasets.FashionMNIST reads them
    (the MNIST format and file names, in the folder named after the class)."""
    _write_idx(root / "FashionMNIST" / "raw", n_train, n_test, seed)
    return root


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 40, seed: int = 0) -> Path:
    """Python pickle batches under <root>/cifar-10-batches-py, as torchvision.datasets.CIFAR10 reads them.

    The md5 sums differ from the real files: tests patch torchvision's integrity check only.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patterns = _class_patterns(rng, (3, 32, 32))
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in batches:
        n = n_test if name == "test_batch" else per_batch
        labels = rng.integers(0, 10, size=n)
        images = _noisy_samples(rng, patterns, labels).reshape(n, 3 * 32 * 32)
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": images, "labels": labels.tolist()}, f)
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return root
