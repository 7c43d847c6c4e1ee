"""Every option of every config group composes and instantiates."""

from __future__ import annotations

import inspect
import re

import hydra
import pytest
import torch
from lightning.pytorch import Trainer
from omegaconf import OmegaConf, open_dict

from advlab.attacks import build_attack
from advlab.data import VisionDataModule
from advlab.errors import ConfigError
from advlab.models import RobustClassifier
from advlab.utils import instantiate_callbacks, instantiate_loggers
from advlab.utils.instantiate import instantiate
from tests.conftest import CONFIG_DIR, config_options, experiment_options


def test_config_groups_have_the_documented_options() -> None:
    assert config_options("data") == ["cifar10", "mnist"]
    assert {"default", "cpu", "gpu", "ddp", "ddp_sim"} <= set(config_options("trainer"))
    assert {"wandb", "csv", "tensorboard", "many", "none"} <= set(config_options("logger"))
    attacks = set(config_options("attack"))
    assert {"fgsm", "ffgsm", "pgd", "pgdl2", "tpgd", "cw", "apgd", "square"} <= attacks
    assert any("autoattack" in name for name in attacks)
    assert set(config_options("experiment")) >= {
        "mnist_clean", "mnist_pgd_at", "mnist_fast_at", "mnist_trades",
        "cifar10_pgd_at", "cifar10_fast_at", "cifar10_trades", "mnist_dcgan", "cifar10_dcgan",
        "mnist_fgsm_rs",
    }  # fmt: skip


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


def test_small_cnn_knobs_reach_the_network(compose_train) -> None:
    cfg = compose_train("model/net=small_cnn", "model.net.dropout=0.2", "model.net.batch_norm=true")
    net = instantiate(cfg.model).net
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.2, 0.2]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 4


def test_strided_cnn_knobs_reach_the_network(compose_train) -> None:
    cfg = compose_train("model/net=strided_cnn", "model.net.stem=8", "model.net.dropout=0.25")
    net = instantiate(cfg.model).net
    assert net.features[0].out_channels == 8 and net.features[0].kernel_size == (3, 3)
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.25, 0.25]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("model/net=strided_cnn", "model.net.dropout=1.0"),
            r"^model\.net\.dropout must be in \[0, 1\), got 1\.0$",
        ),
        (
            ("model/net=strided_cnn", "model.net.stem=-1"),
            r"^model\.net\.stem must be >= 0, got -1$",
        ),
        (("model.net.pooling=min",), r"^model\.net\.pooling='min' is not one of \['avg', 'max'\]$"),
        (("model.net.dropout=1.5",), r"^model\.net\.dropout must be in \[0, 1\), got 1\.5$"),
        (
            ("model.net.batch_norm=maybe",),
            r"^model\.net\.batch_norm must be true or false, got 'maybe'$",
        ),
    ],
)
def test_bad_net_knob_surfaces_as_its_own_one_line_error(
    compose_train, overrides: tuple[str, ...], message: str
) -> None:
    """The net is built inside the model, so Hydra wraps its error twice; the user sees one line."""
    cfg = compose_train(*overrides)
    with pytest.raises(ConfigError, match=message):
        instantiate(cfg.model)


# attack=advgan needs a trained generator's checkpoint: tests/test_advgan.py builds it this way
@pytest.mark.parametrize("option", [o for o in config_options("attack") if o != "advgan"])
def test_attack_options_build_callable_attacks(compose_train, option: str) -> None:
    slot = "train_attack" if option == "free" else "val_attack"  # free: a training attack only
    cfg = compose_train(f"attack@model.{slot}={option}")
    net = hydra.utils.instantiate(cfg.model.net)
    attack = build_attack(cfg.model[slot], net, where=f"model.{slot}")
    assert callable(attack)
    assert type(attack).__name__ == cfg.model[slot]._target_.rsplit(".", 1)[1]


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
        "CheckpointOnSigterm",
        "RandomStateCheckpoint",
    },
    "adversarial_eval": {"AdversarialEvalCallback"},
    "preemption": {"CheckpointOnSigterm", "RandomStateCheckpoint"},
    "advgan": {
        "ModelCheckpoint",
        "RichProgressBar",
        "RichModelSummary",
        "AdvGANGrid",
        "CheckpointOnSigterm",
        "RandomStateCheckpoint",
    },
    "gan": {
        "CheckpointIfMonitored",
        "ModelCheckpoint",
        "RichProgressBar",
        "LearningRateMonitor",
        "RichModelSummary",
        "GANSampleGrid",
        "CheckpointOnSigterm",
        "RandomStateCheckpoint",
    },
    "last_checkpoint": {"ModelCheckpoint"},
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
        assert (best.monitor, best.save_last) == ("val/robust_acc", False)
        assert (last.monitor, last.filename, last.save_top_k) == (None, "last", 1)
        assert best.dirpath == last.dirpath and last.dirpath.endswith("checkpoints")


@pytest.mark.parametrize("option", config_options("debug"))
def test_debug_options_compose(compose_train, option: str) -> None:
    cfg = compose_train(f"debug={option}")
    assert cfg.task_name == "debug"
    assert cfg.trainer.accelerator == "cpu"


@pytest.mark.parametrize("option", experiment_options("robust"))  # GAN recipes: test_gan.py
def test_experiment_options_instantiate(compose_train, option: str) -> None:
    cfg = compose_train(f"experiment={option}")
    model = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    assert model(torch.rand(2, *datamodule.dims)).shape == (2, 10)
    # by full name first (MNIST's fast recipe is free AT, README "Results"), else by suffix
    expected_method = {"mnist_fast_at": "free", "clean": "clean", "pgd_at": "pgd",
                       "fast_at": "fgsm_rs", "fgsm_rs": "fgsm_rs", "trades": "trades"}  # fmt: skip
    expected = expected_method.get(option) or expected_method[option.split("_", 1)[1]]
    assert model.hparams.method == expected


def test_paths_and_hydra_run_dir_compose(compose_train) -> None:
    from hydra import compose, initialize

    with initialize(version_base="1.3", config_path="../configs"):
        cfg = compose("train", return_hydra_config=True)
    assert re.fullmatch(r"\./logs/train/runs/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", cfg.hydra.run.dir)
    assert re.fullmatch(r"\./logs/train/multiruns/[\d_-]+", cfg.hydra.sweep.dir)
