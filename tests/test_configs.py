"""Every option of every config group composes and instantiates."""

from __future__ import annotations

import inspect
import re

import hydra
import pytest
import torch
from hydra.errors import ConfigCompositionException
from lightning.pytorch import Trainer
from omegaconf import OmegaConf, open_dict

from advlab.attacks import build_attack
from advlab.data import VisionDataModule
from advlab.models import RobustClassifier
from advlab.utils import instantiate_callbacks, instantiate_loggers
from tests.conftest import CONFIG_DIR, config_options, experiment_options


def test_config_groups_have_the_documented_options() -> None:
    assert config_options("data") == ["cifar10", "fashion_mnist", "mnist"]
    assert {"default", "cpu", "gpu", "ddp", "ddp_sim"} <= set(config_options("trainer"))
    assert {"wandb", "csv", "tensorboard", "many", "none"} <= set(config_options("logger"))
    attacks = set(config_options("attack"))
    assert {"fgsm", "ffgsm", "pgd", "pgdl2", "tpgd", "cw", "apgd", "square"} <= attacks
    assert any("autoattack" in name for name in attacks)
    assert set(config_options("experiment")) >= {
        "mnist_clean", "mnist_pgd_at", "mnist_free_at", "mnist_trades", "mnist_fgsm_rs",
        "cifar10_pgd_at", "cifar10_fgsm_rs", "cifar10_trades", "mnist_dcgan", "cifar10_dcgan",
        "mnist_smooth", "cifar10_smooth", "mnist_cgan", "cifar10_cgan", "mnist_pgd_at_gen",
    }  # fmt: skip
    assert config_options("method") == [
        "clean", "consistency", "fgsm_rs", "free", "gaussian", "mart", "pgd", "trades",
    ]  # fmt: skip
    assert config_options("suite") == ["advgan", "default", "epoch"]


@pytest.mark.parametrize("option", config_options("data"))
def test_data_options_instantiate(compose_train, option: str) -> None:
    cfg = compose_train(f"data={option}")
    datamodule = hydra.utils.instantiate(cfg.data)
    assert isinstance(datamodule, VisionDataModule)
    assert datamodule.hparams.batch_size == 8


@pytest.mark.parametrize("net", config_options("model/net"))
def test_net_options_build_a_model_with_logits(compose_train, net: str) -> None:
    data = "cifar10" if net == "preact_resnet18" else "mnist"
    cfg = compose_train(f"data={data}", f"model/net={net}")
    model = hydra.utils.instantiate(cfg.model)
    assert isinstance(model, RobustClassifier)
    datamodule = hydra.utils.instantiate(cfg.data)
    logits = model(torch.rand(2, *datamodule.dims))
    assert logits.shape == (2, 10)


@pytest.mark.parametrize("net", config_options("model/net"))
def test_net_yaml_lists_every_constructor_argument(net: str) -> None:
    """The YAML is the knob's documentation: a constructor argument missing from it can only be
    set with Hydra's `+` syntax, and nobody finds it."""
    cfg = OmegaConf.load(CONFIG_DIR / "model" / "net" / f"{net}.yaml")
    arguments = set(inspect.signature(hydra.utils.get_class(cfg._target_)).parameters)
    assert set(cfg) - {"_target_"} == arguments


@pytest.mark.parametrize("net", ["small_cnn", "strided_cnn"])
def test_net_widths_reach_the_network(compose_train, net: str) -> None:
    cfg = compose_train(f"model/net={net}", "model.net.channels=[4,8]", "model.net.hidden=16")
    built = hydra.utils.instantiate(cfg.model.net)
    convs = [m for m in built.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {c.out_channels for c in convs} == {4, 8}
    assert built.features_penultimate(torch.rand(2, 1, 28, 28)).shape == (2, 16)


@pytest.mark.parametrize("knob", ["dropout=0.2", "batch_norm=true", "activation=silu", "stem=8"])
def test_a_removed_net_knob_is_refused_not_ignored(compose_train, knob: str) -> None:
    net = "strided_cnn" if knob.startswith("stem") else "small_cnn"
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'model\.net\."):
        compose_train(f"model/net={net}", f"model.net.{knob}")


# attack=advgan needs a trained generator's checkpoint: tests/test_advgan.py builds it this way
@pytest.mark.parametrize("option", [o for o in config_options("attack") if o != "advgan"])
def test_attack_options_build_callable_attacks(compose_train, option: str) -> None:
    training = option == "free"  # a training attack only: mounted as the method's attack
    slot = "method.attack" if training else "val_attack"
    cfg = compose_train(*(["method=free"] if training else []), f"attack@model.{slot}={option}")
    net = hydra.utils.instantiate(cfg.model.net)
    attack_cfg = OmegaConf.select(cfg.model, slot)
    attack = build_attack(attack_cfg, net, where=f"model.{slot}", training=training)
    assert callable(attack)
    assert type(attack).__name__ == attack_cfg._target_.rsplit(".", 1)[1]


@pytest.mark.parametrize("option", config_options("trainer"))
def test_trainer_options_instantiate(compose_train, monkeypatch, option: str) -> None:
    cfg = compose_train(f"trainer={option}")
    two_processes = option in ("ddp", "ddp_sim", "slurm")
    with open_dict(cfg):  # no GPU in tests: keep the option's other settings, run on CPU
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.devices = 2 if two_processes else 1
    if option == "slurm":  # rank 0 of a 2-task SLURM step, as srun would start it
        slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "advlab",
                 "SLURM_JOB_ID": "1", "SLURM_NODEID": "0", "SLURM_PROCID": "0",
                 "SLURM_LOCALID": "0", "SLURM_NODELIST": "localhost"}  # fmt: skip
        for name, value in slurm.items():
            monkeypatch.setenv(name, value)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert isinstance(trainer, Trainer)
    assert trainer.world_size == (2 if two_processes else 1)


@pytest.mark.parametrize("option", config_options("logger"))
def test_logger_options_instantiate(compose_train, option: str) -> None:
    cfg = compose_train(f"logger={option}")
    loggers = instantiate_loggers(cfg.get("logger"))
    expected = {"none": 0, "many": 2}.get(option, 1)
    assert len(loggers) == expected


EXPECTED_CALLBACKS = {
    "default": {
        "ModelCheckpoint",
        "RichProgressBar",
        "LearningRateMonitor",
        "RichModelSummary",
        "AdversarialEvalCallback",
        "CheckpointOnInterrupt",
        "RandomStateCheckpoint",
    },
    "adversarial_eval": {"AdversarialEvalCallback"},
    "preemption": {"CheckpointOnInterrupt", "RandomStateCheckpoint"},
    "advgan": {
        "ModelCheckpoint",
        "RichProgressBar",
        "RichModelSummary",
        "AdvGANGrid",
        "CheckpointOnInterrupt",
        "RandomStateCheckpoint",
    },
    "gan": {
        "CheckpointIfMonitored",
        "ModelCheckpoint",
        "RichProgressBar",
        "LearningRateMonitor",
        "RichModelSummary",
        "GANSampleGrid",
        "CheckpointOnInterrupt",
        "RandomStateCheckpoint",
    },
    "last_checkpoint": {"ModelCheckpoint"},
    "certified_accuracy": {"ApproximateCertifiedAccuracy"},
    "smoothing": {
        "ModelCheckpoint",
        "RichProgressBar",
        "LearningRateMonitor",
        "RichModelSummary",
        "ApproximateCertifiedAccuracy",
        "CheckpointOnInterrupt",
        "RandomStateCheckpoint",
    },
    "none": set(),
    "model_checkpoint": {"ModelCheckpoint"},
    "rich_progress_bar": {"RichProgressBar"},
    "lr_monitor": {"LearningRateMonitor"},
    "model_summary": {"RichModelSummary"},
}


@pytest.mark.parametrize("option", config_options("callbacks"))
def test_callback_options_instantiate(compose_train, option: str) -> None:
    cfg = compose_train(f"callbacks={option}")
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    assert {type(c).__name__ for c in callbacks} == EXPECTED_CALLBACKS[option]
    if option == "default":
        best, last = (c for c in callbacks if type(c).__name__ == "ModelCheckpoint")
        steps = cfg.model.val_attack.steps
        assert (best.monitor, best.save_last) == (f"val/robust_acc_pgd{steps}", False)
        assert (last.monitor, last.filename, last.save_top_k) == (None, "last", 1)
        assert best.dirpath == last.dirpath and last.dirpath.endswith("checkpoints")


@pytest.mark.parametrize("option", config_options("debug"))
def test_debug_options_compose(compose_train, option: str) -> None:
    cfg = compose_train(f"debug={option}")
    assert cfg.task_name == "debug"
    assert cfg.trainer.devices == 1
    on_gpu = compose_train(f"debug={option}", "trainer=gpu", shrink=False)  # no forced CPU
    assert on_gpu.trainer.accelerator == "gpu"  # a debug preset does not move a run to the CPU


@pytest.mark.parametrize("option", experiment_options("robust"))  # GAN recipes: test_gan.py
def test_experiment_options_instantiate(compose_train, option: str) -> None:
    cfg = compose_train(f"experiment={option}")
    model = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    assert model(torch.rand(2, *datamodule.dims)).shape == (2, 10)
    # an experiment's name says its method (smoothing: the paper each recipe reproduces)
    expected = {
        "clean": "Clean",
        "pgd_at": "PGDAT",
        "free_at": "FreeAT",
        "fgsm_rs": "FGSMRS",
        "trades": "TRADES",
        "mnist_smooth": "Consistency",
        "cifar10_smooth": "Gaussian",
    }
    expected = expected.get(option) or expected[option.split("_", 1)[1]]  # fmt: skip
    assert type(model.method).__name__ == expected


def test_paths_and_hydra_run_dir_compose(compose_train) -> None:
    from hydra import compose, initialize

    with initialize(version_base="1.3", config_path="../configs"):
        cfg = compose("train", return_hydra_config=True)
    assert re.fullmatch(r"\./logs/train/runs/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", cfg.hydra.run.dir)
    assert re.fullmatch(r"\./logs/train/multiruns/[\d_-]+", cfg.hydra.sweep.dir)
