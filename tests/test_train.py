"""End-to-end runs of the training entry point on tiny data in the real file formats."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import MissingConfigException
from omegaconf import open_dict

from advlab.errors import ConfigError
from advlab.train import train
from tests.conftest import REPO_ROOT, experiment_options


def limit_batches(cfg, epochs: int = 1, train_batches: int = 2) -> None:
    with open_dict(cfg):
        cfg.trainer.max_epochs = epochs
        cfg.trainer.limit_train_batches = train_batches
        cfg.trainer.limit_val_batches = 1
        cfg.trainer.limit_test_batches = 1
        cfg.trainer.enable_model_summary = False


@pytest.mark.parametrize("experiment", experiment_options("robust"))  # GAN recipes: test_gan.py
def test_fast_dev_run_of_every_experiment(compose_train, experiment: str) -> None:
    cfg = compose_train(f"experiment={experiment}", "logger=none", "trainer.fast_dev_run=true")
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    (robust,) = [k for k in metrics if k.startswith("test/robust_acc_")]  # named by its attack
    assert robust == "test/robust_acc_aa_fast"
    assert 0.0 <= metrics[robust] <= metrics["test/acc"] + 1e-6
    assert "val/acc" in metrics


def test_run_writes_last_checkpoint_and_resumes_it(compose_train, tmp_path: Path) -> None:
    cfg = compose_train("logger=csv", "test=false")
    limit_batches(cfg, epochs=2)
    with open_dict(cfg):  # epoch 0 is the most robust: the best checkpoint stays at epoch 0
        cfg.callbacks.model_checkpoint.mode = "min"
        cfg.model.optimizer.lr = 0.0
    train(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4  # refreshed every epoch
    assert (tmp_path / "checkpoints" / "epoch_000.ckpt").is_file()

    resumed = compose_train("logger=csv", "test=false", "ckpt_path=last")
    limit_batches(resumed, epochs=3)
    train(resumed)
    assert torch.load(last, weights_only=True)["global_step"] == 6
    with open(tmp_path / "csv" / "version_1" / "metrics.csv") as f:
        epochs_run = {row["epoch"] for row in csv.DictReader(f)}
    assert epochs_run == {"2"}  # continued at epoch 2, did not restart at epoch 0


def test_logger_none_and_callbacks_none_are_valid(compose_train, tmp_path: Path) -> None:
    cfg = compose_train("logger=none", "callbacks=none")
    limit_batches(cfg)
    metrics = train(cfg)
    assert "test/acc" in metrics
    # no advlab checkpoint policy: only Lightning's own default checkpoint
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch=0-step=2.ckpt"]


def test_wandb_logs_offline_into_the_run_dir(compose_train, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train("logger=wandb", "test=false")
    limit_batches(cfg)
    train(cfg)
    from advlab.train import close_loggers

    close_loggers()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(runs[0].rglob("*.wandb"))


def test_net_that_does_not_fit_the_data_is_refused(compose_train) -> None:
    cfg = compose_train("data=cifar10", "model/net=small_cnn", "model.net.image_size=28")
    with pytest.raises(
        ConfigError,
        match=r"model.net \(SmallCNN\) does not fit CIFAR-10 images of shape \(3, 32, 32\)",
    ):
        train(cfg)


def test_wrong_channel_count_is_refused(compose_train) -> None:
    cfg = compose_train("data=mnist", "model/net=preact_resnet18", "model.net.in_channels=3")
    with pytest.raises(
        ConfigError, match=r"does not fit MNIST images of shape \(1, 28, 28\).*to have 3 channels"
    ):
        train(cfg)


def test_batch_that_does_not_divide_across_devices_is_refused(compose_train) -> None:
    cfg = compose_train("trainer=ddp_sim")
    with open_dict(cfg):  # shrink_for_cpu set 1 device and batch 8
        cfg.trainer.devices = 2
        cfg.data.batch_size = 7
    with pytest.raises(ConfigError, match=r"data.batch_size=7 does not divide across 2 processes"):
        train(cfg)


def test_unknown_method_is_refused_before_training(compose_train) -> None:
    with pytest.raises(MissingConfigException, match=r"Could not find 'method/madry'") as info:
        compose_train("method=madry")
    assert "trades" in str(info.value) and "mart" in str(info.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+trainer.gradient_clip_val=1.0", r"trainer.gradient_clip_val=1.0: RobustClassifier steps "
         r"its optimizers itself \(manual optimization\), so Lightning cannot clip"),
        ("+trainer.accumulate_grad_batches=2", r"trainer.accumulate_grad_batches=2: .* cannot "
         r"accumulate its gradients"),
    ],
)  # fmt: skip
def test_manual_optimization_refuses_clipping_and_accumulation(
    compose_train, override: str, message: str
) -> None:
    cfg = compose_train("experiment=mnist_free_at", "logger=none", override)
    with pytest.raises(ConfigError, match=message):
        train(cfg)


def test_epsilon_outside_unit_interval_is_refused(compose_train) -> None:
    cfg = compose_train("model.method.attack.eps=1.5")
    with pytest.raises(ConfigError, match=r"model.method.attack.eps=1.5 is outside \(0, 1\]"):
        train(cfg)


def test_unknown_attack_names_the_available_ones(compose_train) -> None:
    with pytest.raises(MissingConfigException, match=r"Could not find 'attack/pgd50'") as info:
        compose_train("attack@model.method.attack=pgd50")
    assert "ffgsm" in str(info.value)


def test_unknown_test_ckpt_choice_is_refused_before_training(compose_train) -> None:
    cfg = compose_train("test_ckpt=best_val")
    with pytest.raises(ConfigError, match=r"test_ckpt='best_val' is not one of best, last"):
        train(cfg)


def test_checkpoint_on_robust_accuracy_without_a_val_attack_is_refused(compose_train) -> None:
    cfg = compose_train("logger=none", "model.val_attack=null")
    with pytest.raises(
        ConfigError, match=r"ModelCheckpoint monitors val/robust_acc_none, which model"
    ):
        train(cfg)
    fixed = compose_train(
        "logger=none", "model.val_attack=null", "callbacks.model_checkpoint.monitor=val/acc"
    )
    assert "val/acc" in train(fixed)


def test_ckpt_path_last_without_a_checkpoint_is_refused(compose_train) -> None:
    cfg = compose_train("ckpt_path=last")
    with pytest.raises(
        ConfigError, match=r"ckpt_path=last: no checkpoint at .*last.ckpt \(pass hydra.run.dir="
    ):
        train(cfg)


def _run_train_py(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "train.py", *overrides],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


# one epoch of 2 batches, 1-step attacks, CSV logs: a real `python train.py` in seconds
TINY_RUN = (
    "data.batch_size=8", "data.eval_batch_size=8", "data.val_size=16", "trainer.max_epochs=1",
    "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
    "model.method.attack.steps=1", "model.val_attack.steps=1", "model.test_attack.steps=1",
    "logger=csv", "extras.print_config=false",
)  # fmt: skip


def test_train_py_honours_run_dir_and_writes_last_ckpt(mnist_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = _run_train_py(
        f"hydra.run.dir={run_dir}", f"data.data_dir={mnist_dir}", "trainer=cpu", *TINY_RUN
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "csv" / "version_0" / "metrics.csv").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()


def test_train_py_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    result = _run_train_py(f"hydra.run.dir={tmp_path}", "model.method.attack.eps=2", "logger=none")
    assert result.returncode == 2
    lines = [
        line for line in result.stderr.strip().splitlines() if line.startswith("advlab: error:")
    ]
    assert lines == [
        "advlab: error: model.method.attack.eps=2 is outside (0, 1]: Linf budgets are in pixel "
        "units of [0, 1] images (MNIST 0.3, CIFAR-10 8/255≈0.0314)"
    ]
    assert "Traceback" not in result.stderr


def test_train_py_runs_two_cpu_processes_with_ddp_sim(mnist_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    result = _run_train_py(
        f"hydra.run.dir={run_dir}", f"data.data_dir={mnist_dir}", "trainer=ddp_sim", *TINY_RUN
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MEMBER: 2/2" in result.stderr + result.stdout
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # one run dir for both ranks
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
