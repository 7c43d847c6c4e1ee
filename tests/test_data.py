"""DataModules read the real file formats through torchvision and hand out [0, 1] batches."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from advlab.data import CIFAR10DataModule, MNISTDataModule
from advlab.data.augment import random_crop, random_horizontal_flip
from advlab.data.sampler import ResumableShuffleSampler
from advlab.errors import ConfigError, DatasetFilesMissingError
from advlab.train import run
from advlab.utils import instantiate
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


def test_a_val_size_that_takes_most_of_the_training_files_is_warned_about(
    mnist_dir: Path, caplog
) -> None:
    """The default val_size (5,000) is sized for full MNIST: on a 7,000-digit copy it would leave
    2,000 digits to train on without a word (a bare GAN then draws noise)."""
    caplog.set_level(logging.WARNING, logger="advlab.data.split")
    _setup(MNISTDataModule(str(mnist_dir), batch_size=8, val_size=16, download=False))
    assert "holds out" not in caplog.text
    dm = _setup(MNISTDataModule(str(mnist_dir), batch_size=8, val_size=60, download=False))
    assert (len(dm.data_train), len(dm.data_val)) == (36, 60)
    assert (
        "data.val_size=60 holds out 62% of the 96 training images, leaving 36 to train on "
        "(a subset of the files?); data.val_size=10 would hold out 10%" in caplog.text
    )


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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop_padding": -1}, r"^data.crop_padding must be >= 0, got -1$"),
        ({"batch_size": 0}, r"^data.batch_size must be >= 1, got 0$"),
        ({"val_size": -1}, r"^data.val_size must be >= 0, got -1$"),
    ],
)
def test_bad_loader_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MNISTDataModule("unused", **kwargs)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("data.image_shape=[3,28,28]",),
            r"data.image_shape=\[3, 28, 28\] but MNIST images are \[1, 28, 28\] \(channels, "
            r"height, width\)",
        ),
        (
            ("data=cifar10", "data.image_shape=[3,28,28]"),
            r"data.image_shape=\[3, 28, 28\] but CIFAR-10 images are \[3, 32, 32\]",
        ),
        (("data.num_classes=100",), r"data.num_classes=100 but MNIST has 10 classes"),
        (("data.threat_model.eps=1.5",), r"data.threat_model.eps=1.5 is outside \(0, 1\]"),
        (("data.threat_model.eps=0",), r"data.threat_model.eps=0 is outside \(0, 1\]"),
        (("data.threat_model.eps=big",), r"data.threat_model.eps='big' is not a number"),
        (("data.threat_model.norm=L1",), r"data.threat_model.norm='L1' is not one of Linf, L2"),
        (
            ("+data.threat_model.p=2",),
            r"data.threat_model must be \{norm: Linf\|L2, eps: <budget>\}, got",
        ),
    ],
)
def test_data_config_that_contradicts_the_dataset_is_one_line(
    compose_train, overrides: tuple[str, ...], message: str
) -> None:
    """Shapes, classes and the budget are declared in the data config (networks and attacks read
    them from there), so a wrong one is refused where it is declared, before any network exists."""
    cfg = compose_train(*overrides)
    with pytest.raises(ConfigError, match="^" + message) as info:
        instantiate(cfg.data)
    assert "\n" not in str(info.value)


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


def test_train_reports_a_contradicting_data_config_in_one_line(compose_train, capsys) -> None:
    cfg = compose_train("data.num_classes=100", "logger=none")
    with pytest.raises(SystemExit) as info:
        run(cfg)
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "advlab: error: data.num_classes=100 but MNIST has 10 classes"
    )
