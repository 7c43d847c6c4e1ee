"""DataModules read the real file formats through torchvision and hand out [0, 1] batches."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from advlab.data import CIFAR10DataModule, MNISTDataModule
from advlab.data.augment import random_crop, random_horizontal_flip, random_rotate_scale
from advlab.data.sampler import ResumableShuffleSampler
from advlab.errors import ConfigError, DatasetFilesMissingError
from tests.conftest import REAL_MNIST


class _FakeTrainer:
    """Just what setup() and on_after_batch_transfer() read from a Trainer."""

    def __init__(self, world_size: int = 1, training: bool = True) -> None:
        self.world_size = world_size
        self.global_rank = 0
        self.training = training
        self.fit_loop = SimpleNamespace(restarting=False)


def _setup(datamodule, world_size: int = 1, training: bool = True):
    datamodule.trainer = _FakeTrainer(world_size, training)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_mnist_reads_idx_files_and_splits(mnist_dir: Path) -> None:
    dm = _setup(MNISTDataModule(str(mnist_dir), batch_size=8, val_size=16, download=False))
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (80, 16, 48)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (8, 1, 28, 28)
    images, labels = dm.on_after_batch_transfer((images, labels), 0)
    assert images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert labels.dtype == torch.int64 and labels.max() < 10


def test_cifar10_reads_pickle_batches(cifar_dir: Path) -> None:
    dm = _setup(CIFAR10DataModule(str(cifar_dir), batch_size=10, val_size=20, download=False))
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (80, 20, 40)
    images, _ = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert images.shape == (10, 3, 32, 32)
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_loaders_fetch_whole_batches_equal_to_item_by_item(mnist_dir: Path) -> None:
    """Batched fetching (one indexing op per tensor) gives the batches per-item fetching gives."""
    dm = _setup(MNISTDataModule(str(mnist_dir), batch_size=8, val_size=16, download=False))
    assert callable(getattr(dm.data_train, "__getitems__", None))  # Subset passes it through
    fetched = list(dm.val_dataloader())
    images, labels = dm.data_val.dataset.tensors
    indices = torch.as_tensor(dm.data_val.indices)
    assert torch.equal(torch.cat([b[0] for b in fetched]), images[indices])
    assert torch.equal(torch.cat([b[1] for b in fetched]), labels[indices])
    single = [dm.data_val[i] for i in range(3)]
    assert single[0][0].shape == (1, 28, 28) and single[0][1].dim() == 0


def test_split_is_fixed_by_split_seed(mnist_dir: Path) -> None:
    def val_indices(seed: int) -> list[int]:
        dm = _setup(MNISTDataModule(str(mnist_dir), val_size=16, split_seed=seed, download=False))
        return list(dm.data_val.indices)

    assert val_indices(1) == val_indices(1)
    assert val_indices(1) != val_indices(2)


def test_global_batch_is_divided_across_processes(mnist_dir: Path) -> None:
    dm = _setup(
        MNISTDataModule(
            str(mnist_dir), batch_size=8, eval_batch_size=16, val_size=16, download=False
        ),
        2,
    )
    assert dm.batch_size_per_device == 4
    assert dm.eval_batch_size_per_device == 8
    assert next(iter(dm.train_dataloader()))[0].shape[0] == 4


def test_batch_that_does_not_divide_is_refused(mnist_dir: Path) -> None:
    dm = MNISTDataModule(str(mnist_dir), batch_size=10, val_size=16, download=False)
    with pytest.raises(ConfigError, match=r"data.batch_size=10 does not divide across 3 processes"):
        _setup(dm, world_size=3)


def test_missing_files_are_named_with_the_fix(tmp_path: Path) -> None:
    dm = MNISTDataModule(str(tmp_path), download=False)
    with pytest.raises(DatasetFilesMissingError) as info:
        dm.prepare_data()
    message = str(info.value)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        assert f"MNIST/raw/{name}" in message
    assert "data.data_dir" in message and "internet" in message
    assert "\n" not in message


def test_failed_download_is_reported_with_missing_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("torchvision.datasets.utils.urllib.request.urlopen", no_network)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    dm = CIFAR10DataModule(str(tmp_path), download=True)
    with pytest.raises(
        DatasetFilesMissingError, match=r"6 file\(s\) missing.*the download failed"
    ) as info:
        dm.prepare_data()
    assert "cifar-10-batches-py/test_batch" in str(info.value)
    assert "cifar-10-batches-py/data_batch_1," not in str(info.value)


def test_training_batches_are_augmented_and_eval_batches_are_not(cifar_dir: Path) -> None:
    dm = CIFAR10DataModule(
        str(cifar_dir), batch_size=10, val_size=20, download=False, crop_padding=4, flip=True
    )
    _setup(dm)
    batch = next(iter(dm.val_dataloader()))
    torch.manual_seed(0)
    train_images, _ = dm.on_after_batch_transfer(batch, 0)
    dm.trainer.training = False
    eval_images, _ = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(eval_images, batch[0].float() / 255)
    assert not torch.equal(train_images, eval_images)


def test_random_crop_matches_padding_and_keeps_shape() -> None:
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    generator = torch.Generator().manual_seed(0)
    crops = [random_crop(images, padding=1, generator=generator) for _ in range(50)]
    assert all(c.shape == images.shape for c in crops)
    for crop in crops:  # each crop is the image shifted by at most one pixel, zero-filled
        found = False
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                shifted = torch.zeros_like(images[0])
                src = images[0, :, max(dy, 0) : 4 + min(dy, 0), max(dx, 0) : 4 + min(dx, 0)]
                shifted[:, max(-dy, 0) : 4 + min(-dy, 0), max(-dx, 0) : 4 + min(-dx, 0)] = src
                found |= torch.equal(shifted, crop[0])
        assert found
    assert len({tuple(c[0].flatten().tolist()) for c in crops}) > 3
    assert torch.equal(random_crop(images, padding=0), images)


def test_random_flip_mirrors_about_half() -> None:
    images = torch.rand(2000, 1, 2, 2)
    flipped = random_horizontal_flip(images, generator=torch.Generator().manual_seed(0))
    mirrored = (flipped == images.flip(-1)).flatten(1).all(1)
    assert 0.45 < mirrored.float().mean().item() < 0.55
    assert ((flipped == images).flatten(1).all(1) | mirrored).all()


def test_rotation_by_the_full_range_is_an_exact_quarter_turn(monkeypatch) -> None:
    images = torch.rand(3, 1, 28, 28)
    assert torch.equal(random_rotate_scale(images, 0.0, 0.0), images)
    ones = lambda *shape, **_: torch.ones(*shape)  # noqa: E731 - every draw at +degrees, zoom 1+s
    monkeypatch.setattr(torch, "rand", ones)
    turned = random_rotate_scale(images, 90.0, 0.0)
    assert (turned - torch.rot90(images, 1, (2, 3))).abs().max().item() < 1e-5
    zoomed = random_rotate_scale(images, 0.0, 0.5)  # 1.5x: the centre pixels spread outwards
    assert zoomed[..., 0, :].abs().max().item() < images.abs().max().item()
    assert not torch.allclose(zoomed, images, atol=1e-3)


def test_random_rotations_stay_in_range_and_differ_per_image() -> None:
    bar = torch.zeros(400, 1, 29, 29)
    bar[:, :, 14, 4:25] = 1.0  # a horizontal bar through the centre
    turned = random_rotate_scale(bar, 10.0, 0.0, generator=torch.Generator().manual_seed(0))
    rows, cols = torch.meshgrid(torch.arange(29.0), torch.arange(29.0), indexing="ij")
    weights = turned[:, 0]
    # the bar's angle from its second moments: within +-10 degrees, and spread over that range
    dy, dx = rows - 14, cols - 14
    mxx = (weights * dx * dx).sum((1, 2))
    mxy = (weights * dx * dy).sum((1, 2))
    myy = (weights * dy * dy).sum((1, 2))
    angles = torch.rad2deg(0.5 * torch.atan2(2 * mxy, mxx - myy)).abs()
    assert angles.max().item() < 10.5
    assert angles.min().item() < 1.0 and angles.max().item() > 9.0
    assert turned.min().item() >= 0 and turned.max().item() <= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rotation": -5.0}, r"data.rotation must be in \[0, 180\] degrees, got -5.0"),
        ({"scale": 1.0}, r"data.scale must be in \[0, 1\), got 1.0"),
    ],
)
def test_bad_augmentation_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MNISTDataModule("unused", **kwargs)


@pytest.mark.skipif(
    not (REAL_MNIST / "MNIST" / "raw").is_dir(), reason="no real digits in ../shared"
)
def test_real_mnist_digits_load() -> None:
    dm = _setup(MNISTDataModule(str(REAL_MNIST), val_size=500, download=False))
    assert len(dm.data_train) + len(dm.data_val) == 7000
    assert len(dm.data_test) == 1000
    labels = torch.stack([dm.data_test[i][1] for i in range(1000)])
    assert torch.bincount(labels, minlength=10).min() > 50


def _batches(sampler: ResumableShuffleSampler, batch_size: int) -> list[list[int]]:
    indices = list(sampler)
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]


def test_two_ranks_together_see_the_single_process_batches() -> None:
    data = list(range(40))
    single = _batches(ResumableShuffleSampler(data, num_replicas=1, rank=0, seed=3), 8)
    ranks = [
        _batches(ResumableShuffleSampler(data, num_replicas=2, rank=r, seed=3), 4) for r in (0, 1)
    ]
    assert [sorted(a + b) for a, b in zip(*ranks, strict=True)] == [sorted(b) for b in single]


def test_shuffle_depends_on_seed_and_epoch_only_and_can_start_part_way() -> None:
    data = list(range(40))
    first = ResumableShuffleSampler(data, num_replicas=1, rank=0, seed=3)
    again = ResumableShuffleSampler(data, num_replicas=1, rank=0, seed=3)
    assert list(first) == list(again)
    first.set_epoch(1)
    epoch1 = list(first)
    assert epoch1 != list(again) and sorted(epoch1) == data
    again.set_epoch(1)
    again.skip_next(16)
    assert list(again) == epoch1[16:]
    assert list(again) == epoch1  # the skip applies to one pass only
