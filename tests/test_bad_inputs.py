"""Damaged files and impossible settings fail in one line that names them, before training, and
leave no W&B run behind."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback
from torchvision.datasets import cifar as cifar_module
from torchvision.datasets.utils import check_integrity

from advlab.attacks.build import validate_attack_config
from advlab.data import CIFAR10DataModule, MNISTDataModule
from advlab.errors import ConfigError, DatasetFilesCorruptError
from advlab.preflight import check_accelerator_available
from advlab.train import run
from advlab.utils.output_dir import unwritable_reason
from tests.datafiles import write_cifar10, write_mnist

IMAGES = "train-images-idx3-ubyte"
LABELS = "train-labels-idx1-ubyte"


def damage(raw: Path, how: str) -> None:
    images = raw / IMAGES
    data = images.read_bytes()
    if how == "empty":
        images.write_bytes(b"")
    elif how == "header":
        images.write_bytes(data[:10])
    elif how == "body":
        images.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        images.write_bytes(torch.randint(0, 256, (len(data),), dtype=torch.uint8).numpy().tobytes())
    elif how == "labels":  # fewer labels than images: a labels file of another copy
        labels = (raw / LABELS).read_bytes()
        (raw / LABELS).write_bytes(struct.pack(">II", 2049, 40) + labels[8:48])


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("empty", f"{IMAGES} is empty"),
        ("header", f"{IMAGES} is cut inside its header \\(10 bytes\\)"),
        ("body", f"{IMAGES} has 37640 bytes but its header \\(96x28x28\\) needs 75280: truncated"),
        ("garbage", f"{IMAGES} is not an IDX file"),
        ("labels", "the training files under .* hold 96 images but 40 labels"),
    ],
)
def test_damaged_mnist_files_are_named_in_one_line(tmp_path: Path, how: str, message: str) -> None:
    write_mnist(tmp_path)
    damage(tmp_path / "MNIST" / "raw", how)
    datamodule = MNISTDataModule(data_dir=str(tmp_path), val_size=16, download=False)
    with pytest.raises(DatasetFilesCorruptError, match=f"^MNIST: .*{message}") as info:
        datamodule.setup("fit")
    assert "\n" not in str(info.value) and "Fix: delete the damaged file(s)" in str(info.value)


def test_cifar_batch_failing_its_md5_is_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cifar_module, "check_integrity", check_integrity)  # the real md5 check
    write_cifar10(tmp_path)
    datamodule = CIFAR10DataModule(data_dir=str(tmp_path), val_size=16, download=False)
    with pytest.raises(DatasetFilesCorruptError, match=r"data_batch_1 fails its md5 check"):
        datamodule.setup("fit")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("alpha", -0.1, "alpha=-0.1 must be a positive step size"),
        ("alpha", 0.0, "alpha=0.0 must be a positive step size"),
        ("steps", 0, "steps=0 must be an integer >= 1"),
        ("steps", 2.5, "steps=2.5 must be an integer >= 1"),
    ],
)
def test_attack_step_size_and_count_are_checked(key: str, value: Any, message: str) -> None:
    cfg = {"_target_": "torchattacks.PGD", "norm": "Linf", "eps": 0.3, "alpha": 0.01, "steps": 5}
    validate_attack_config(cfg, where="model.method.attack")  # the valid one passes
    with pytest.raises(ConfigError, match=f"^model.method.attack.{message}"):
        validate_attack_config({**cfg, key: value}, where="model.method.attack")


def test_gpu_trainer_without_a_gpu_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_accelerator_available("cpu")
    with pytest.raises(ConfigError, match=r"^trainer.accelerator=gpu but no GPU is visible"):
        check_accelerator_available("gpu")


def test_read_only_folder_is_reported(tmp_path: Path) -> None:
    assert unwritable_reason(tmp_path / "new" / "run") is None
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where a folder should be: unwritable even for root
    assert unwritable_reason(blocker / "run") is not None


class FailsAtTrainStart(Callback):
    """A user error found once fit has started (the W&B run exists by then)."""

    def on_train_start(self, *_: Any) -> None:
        raise ConfigError("found late on purpose")


def test_user_error_after_fit_started_leaves_no_wandb_run(compose_train, tmp_path, capsys):
    cfg = compose_train(
        "logger=wandb", "+callbacks.late._target_=tests.test_bad_inputs.FailsAtTrainStart"
    )
    with pytest.raises(SystemExit) as info:
        run(cfg)
    assert info.value.code == 2
    assert capsys.readouterr().err.endswith("advlab: error: found late on purpose\n")
    assert list((tmp_path / "wandb").glob("*run-*")) == []
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))


def test_data_errors_come_before_any_logger_writes(compose_train, tmp_path, mnist_dir) -> None:
    data = tmp_path / "data"
    shutil.copytree(mnist_dir, data)
    damage(data / "MNIST" / "raw", "header")
    cfg = compose_train("logger=wandb")
    cfg.data.data_dir = str(data)  # compose_train points it at the intact files
    with pytest.raises(SystemExit) as info:
        run(cfg)
    assert info.value.code == 2
    assert not (tmp_path / "wandb").exists()
