"""Shared fixtures: tiny datasets in real formats, composed configs pointed at tmp dirs."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from torchvision.datasets import cifar as cifar_module

import advlab  # noqa: F401  (registers the config resolvers before any compose)
from tests.datafiles import write_cifar10, write_fashion_mnist, write_mnist

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
REAL_MNIST = REPO_ROOT.parent / "shared" / "datasets"
ATTACK_KEYS = ("val_attack", "test_attack")

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def fashion_mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("fashion_mnist"))


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(autouse=True)
def _inception_is_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """GAN runs default to Inception FID when it loads: in tests it never does, so no test
    downloads 100 MB of weights or spends minutes in Inception on a CPU, with or without a
    network. Tests of the Inception path patch `InceptionFeatures` themselves."""

    def offline() -> None:
        raise ConnectionError("no network in tests")

    monkeypatch.setattr("advlab.quality.metrics.InceptionFeatures", offline)


@pytest.fixture(autouse=True)
def _cifar_md5_is_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny CIFAR files cannot match the real md5 sums; torchvision still parses them."""
    monkeypatch.setattr(
        cifar_module, "check_integrity", lambda path, md5=None: os.path.isfile(path)
    )


def shrink_for_cpu(cfg: DictConfig, data_dir: Path, output_dir: Path) -> DictConfig:
    """Tiny batches, 2-step attacks, CPU, outputs in output_dir: configs run in seconds."""
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
        cfg.data.data_dir = str(data_dir)
        cfg.data.batch_size = 8
        cfg.data.eval_batch_size = 8
        cfg.data.val_size = 16
        cfg.data.download = False
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.devices = 1
        cfg.extras.print_config = False
        method = cfg.model.get("method") or {}
        for attack in (method.get("attack"), *(cfg.model.get(key) for key in ATTACK_KEYS)):
            if attack is not None and "steps" in attack:
                attack.steps = min(attack.steps, 2)
            if attack is not None and "n_queries" in attack:
                attack.n_queries = 20
        certify = (cfg.get("callbacks") or {}).get("certified_accuracy")
        if certify is not None:  # randomized smoothing: a few images, a few draws
            certify.update(num_samples=4, n=50, n0=8)
    return cfg


@pytest.fixture
def compose_train(
    tmp_path: Path, mnist_dir: Path, fashion_mnist_dir: Path, cifar_dir: Path
) -> Iterator[Callable[..., DictConfig]]:
    """compose_train("experiment=mnist_pgd_at", ...) -> a config ready for advlab.train.train."""

    def _compose(*overrides: str, shrink: bool = True) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize(version_base="1.3", config_path="../configs"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig().set_config(cfg)
        data_dirs = {"CIFAR10": cifar_dir, "FashionMNIST": fashion_mnist_dir}
        target = cfg.data._target_
        data_dir = next((d for name, d in data_dirs.items() if name in target), mnist_dir)
        if shrink:
            shrink_for_cpu(cfg, data_dir, tmp_path)
        with open_dict(cfg):
            del cfg.hydra
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


def attack_config(name: str, data: str = "mnist", **overrides) -> dict:
    """attack/<name>.yaml resolved against data/<data>.yaml's threat model, as a plain dict."""
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../configs"):
        cfg = compose("train", overrides=[f"data={data}", f"attack@model.val_attack={name}"])
    GlobalHydra.instance().clear()
    attack = OmegaConf.to_container(cfg.model.val_attack, resolve=True)
    attack.update(overrides)
    return attack


def config_options(group: str) -> list[str]:
    """Names of the options of a config group folder (e.g. attack -> [apgd, cw, ...])."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def experiment_options(model: str) -> list[str]:
    """Experiment recipes of one model group option (`- override /model: <model>`)."""
    pattern = re.compile(rf"^\s*-\s*override\s+/model:\s*{re.escape(model)}\s*$", re.MULTILINE)
    return [
        name
        for name in config_options("experiment")
        if pattern.search((CONFIG_DIR / "experiment" / f"{name}.yaml").read_text())
    ]


# every attack of the eval suite cut to a few steps: the pipeline, not the numbers, is tested
TINY_EVAL = (
    "num_samples=12", "batch_size=8", "attack=autoattack_fast", "attack.steps=2",
    "suite.attacks.pgd.attack.steps=2", "suite.attacks.square.attack.n_queries=10",
    "suite.eps_multiples=[0.0,0.5,1.0]", "sanity.steps_factor=2", "extras.print_config=false",
)  # fmt: skip


@pytest.fixture
def compose_eval(tmp_path: Path, mnist_dir: Path) -> Iterator[Callable[..., DictConfig]]:
    """compose_eval("ckpt_path=...", ...) -> an eval config writing into tmp_path."""

    def _compose(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize(version_base="1.3", config_path="../configs"):
            cfg = compose("eval", overrides=[*TINY_EVAL, *overrides], return_hydra_config=True)
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path)
            cfg.paths.log_dir = str(tmp_path)
            cfg.data.data_dir = str(mnist_dir)
            cfg.data.download = False
            cfg.data.val_size = 16  # the tiny files hold 96 training images
            del cfg.hydra
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
