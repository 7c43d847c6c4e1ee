"""Extending advlab is one file each: a dataset (a DataModule + its YAML), a network (a .py + its
YAML, both outside the package), an attack (one YAML). Each is written here as a user would."""

from __future__ import annotations

import inspect
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

import advlab.data.fashion_mnist
from advlab.attacks import attack_norm, build_attack, check_within_budget
from advlab.checkpoints import check_targets, trust_targets
from advlab.data import FashionMNISTDataModule
from advlab.errors import ConfigError, DatasetFilesMissingError

TINY_MLP_PY = '''
"""A two-layer perceptron: the smallest network worth attacking."""

import torch
from torch import nn


class TinyMLP(nn.Module):
    def __init__(self, in_channels: int, image_size: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * image_size * image_size, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
'''

TINY_MLP_YAML = """
# A user's network, sized from the data config like the shipped ones.
_target_: tiny_mlp_net.TinyMLP
in_channels: ${data.image_shape.0}
image_size: ${data.image_shape.1}
num_classes: ${data.num_classes}
hidden: 32
"""

MIFGSM_YAML = """
# MI-FGSM (Dong et al. 2018): iterative FGSM whose steps follow a momentum of the gradients.
_target_: torchattacks.MIFGSM
norm: Linf
eps: ${data.threat_model.eps}
alpha: ${div:${data.threat_model.eps},4}
steps: 5
decay: 1.0
"""


@pytest.fixture
def user_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user's folder: `tiny_mlp_net.py` (importable) and `configs/` for Hydra's search path."""
    root = tmp_path / "user"
    (root / "configs" / "model" / "net").mkdir(parents=True)
    (root / "configs" / "attack").mkdir(parents=True)
    (root / "tiny_mlp_net.py").write_text(TINY_MLP_PY)
    (root / "configs" / "model" / "net" / "tiny_mlp.yaml").write_text(TINY_MLP_YAML)
    (root / "configs" / "attack" / "mifgsm.yaml").write_text(MIFGSM_YAML)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "tiny_mlp_net", raising=False)
    yield root
    sys.modules.pop("tiny_mlp_net", None)
    trust_targets(None)


def search_path(root: Path) -> str:
    return f"hydra.searchpath=[file://{root / 'configs'}]"


def _idx(path: Path, header: str) -> np.ndarray:
    """Decode an IDX file independently of torchvision: big-endian sizes, then uint8 data."""
    raw = path.read_bytes()
    size = struct.calcsize(header)
    _magic, *shape = struct.unpack(header, raw[:size])
    return np.frombuffer(raw[size:], dtype=np.uint8).reshape(shape)


# ---- a dataset ----------------------------------------------------------------------------------
def test_fashion_mnist_is_one_short_file() -> None:
    lines = inspect.getsource(advlab.data.fashion_mnist).splitlines()
    assert len(lines) <= 50


def test_fashion_mnist_reads_the_idx_files_through_torchvision(fashion_mnist_dir: Path) -> None:
    dm = FashionMNISTDataModule(str(fashion_mnist_dir), batch_size=8, val_size=16, download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (48, 16, 32)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (8, 1, 28, 28)
    assert labels.dtype == torch.int64
    images, labels = dm.on_after_batch_transfer((images, labels), 0)
    assert images.dtype == torch.float32 and 0.0 <= images.min() <= images.max() <= 1.0
    # the test split holds exactly the bytes of the files, in order, with labels in 0..9
    raw = fashion_mnist_dir / "FashionMNIST" / "raw"
    test_images, test_labels = dm.data_test.tensors
    assert np.array_equal(test_images[:, 0].numpy(), _idx(raw / "t10k-images-idx3-ubyte", ">IIII"))
    assert np.array_equal(test_labels.numpy(), _idx(raw / "t10k-labels-idx1-ubyte", ">II"))
    assert test_labels.min() >= 0 and test_labels.max() <= 9


def test_fashion_mnist_names_its_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetFilesMissingError) as info:
        FashionMNISTDataModule(str(tmp_path), download=False).prepare_data()
    assert "4 file(s) missing" in str(info.value)
    assert "FashionMNIST/raw/train-images-idx3-ubyte" in str(info.value)
    assert "\n" not in str(info.value)


def test_data_fashion_mnist_composes_with_the_default_model(compose_train) -> None:
    cfg = compose_train("data=fashion_mnist")
    assert cfg.data.threat_model == {"norm": "Linf", "eps": 0.1}
    budgets = _values_of(OmegaConf.to_container(cfg, resolve=True), "eps")
    assert {"model.method.attack", "model.val_attack", "model.test_attack"} <= set(budgets)
    assert set(budgets.values()) == {0.1}  # every attack config, the per-epoch suite's too
    datamodule = hydra.utils.instantiate(cfg.data)
    assert isinstance(datamodule, FashionMNISTDataModule)
    datamodule.setup("fit")
    images, _ = datamodule.on_after_batch_transfer(next(iter(datamodule.val_dataloader())), 0)
    assert hydra.utils.instantiate(cfg.model.net)(images).shape == (8, 10)


def _values_of(node: object, key: str, at: str = "") -> dict[str, object]:
    """{path of the parent: value} of every `key` in nested dicts and lists."""
    found: dict[str, object] = {}
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                found[at or "<root>"] = value
            found |= _values_of(value, key, f"{at}.{name}" if at else str(name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found |= _values_of(value, key, f"{at}[{index}]")
    return found


# ---- a network ----------------------------------------------------------------------------------
@pytest.mark.parametrize("data", ["mnist", "fashion_mnist", "cifar10"])
def test_a_network_is_one_python_file_plus_one_yaml(compose_train, user_project, data) -> None:
    cfg = compose_train(f"data={data}", "model/net=tiny_mlp", search_path(user_project))
    net = hydra.utils.instantiate(cfg.model.net)
    assert type(net).__module__ == "tiny_mlp_net"
    shape = tuple(cfg.data.image_shape)
    assert net(torch.rand(4, *shape)).shape == (4, cfg.data.num_classes)


def test_a_checkpoint_of_a_user_network_needs_its_module_trusted(
    compose_train, user_project
) -> None:
    """A checkpoint's `_target_`s are built only from trusted modules: the user allows theirs."""
    cfg = compose_train("model/net=tiny_mlp", search_path(user_project))
    hparams = {"net": OmegaConf.to_container(cfg.model.net, resolve=True)}
    with pytest.raises(ConfigError, match=r"allow it: trusted_targets=\[tiny_mlp_net\.TinyMLP\]$"):
        check_targets(hparams, "ckpt")
    trust_targets(["tiny_mlp_net."])
    check_targets(hparams, "ckpt")


# ---- an attack ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("data", "eps"), [("mnist", 0.3), ("fashion_mnist", 0.1)])
def test_an_attack_is_one_yaml(compose_train, user_project, data: str, eps: float) -> None:
    cfg = compose_train(
        f"data={data}",
        "attack@model.val_attack=mifgsm",
        "model.net.channels=[4,8]",
        "model.net.hidden=16",
        search_path(user_project),
    )
    attack_cfg: DictConfig = cfg.model.val_attack
    assert attack_cfg._target_ == "torchattacks.MIFGSM" and attack_cfg.eps == eps
    torch.manual_seed(0)
    net = hydra.utils.instantiate(cfg.model.net).eval()
    attack = build_attack(attack_cfg, net, where="model.val_attack")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    images, labels = datamodule.on_after_batch_transfer(next(iter(datamodule.val_dataloader())), 0)
    adversarial = attack(images, labels)
    check_within_budget(images, adversarial, eps, attack_norm(attack_cfg))
    assert (adversarial - images).abs().max() > eps / 10  # it did move the images
