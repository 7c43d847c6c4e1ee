"""A run stopped mid-epoch (SIGTERM, Ctrl-C, SLURM's requeue signal) and resumed ends exactly like
an uninterrupted run: same weights, same optimizer state, same EMA, bit for bit on the CPU."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig, open_dict

from advlab.train import train
from tests.test_advgan import save_classifier

STEPS_PER_EPOCH = 4
SIGNAL_AT = "+callbacks.stop._target_=tests.preemption_helpers.SignalAtBatch"


def short_run(cfg: DictConfig, output_dir: Path) -> DictConfig:
    """2 epochs of 4 batches, augmentation and attack random starts on: RNG state matters."""
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.trainer.max_epochs = 2
        cfg.trainer.limit_train_batches = STEPS_PER_EPOCH
        cfg.trainer.limit_val_batches = 1
        cfg.trainer.num_sanity_val_steps = 0
        cfg.trainer.enable_model_summary = False
        cfg.data.crop_padding = 2
        cfg.callbacks.adversarial_eval = None
        if "generator" in cfg.model:  # GAN and AdvGAN: small networks, same code paths
            cfg.model.generator.width = 4
        if "discriminator" in cfg.model:
            cfg.model.discriminator.width = 4
    return cfg


def tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside nested dicts/lists, keyed by its path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    )
    found: dict[str, torch.Tensor] = {}
    for key, value in items:
        found |= tensors(value, f"{prefix}/{key}")
    return found


def training_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """Weights (EMA included), optimizer state and weight-averaging state of `last.ckpt`."""
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    state = tensors(checkpoint["state_dict"], "weights")
    state |= tensors(checkpoint["optimizer_states"], "optimizer")
    # EMAWeightAveraging: state_dict holds the average, these the raw weights and the counters
    for key in ("current_model_state", "averaging_state"):
        state |= tensors(checkpoint.get(key, {}), key)
    return state


def assert_resume_is_exact(
    compose: Callable[..., DictConfig], tmp_path: Path, stop: str, batch: int, *overrides: str
) -> dict[str, torch.Tensor]:
    """Train straight through; train, stop with `stop` after `batch` batches, resume; compare."""
    train(short_run(compose("logger=none", "test=false", *overrides), tmp_path / "straight"))
    stopped = short_run(
        compose(
            "logger=none", "test=false", SIGNAL_AT, f"+callbacks.stop.batch={batch}",
            f"+callbacks.stop.signal={stop}", *overrides,
        ),
        tmp_path / "stopped",
    )  # fmt: skip
    ctrl_c = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit):  # Lightning's SIGTERMException
        train(stopped)
    assert signal.getsignal(signal.SIGINT) is ctrl_c  # Ctrl-C does what it did before the run
    saved = torch.load(tmp_path / "stopped" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == batch
    resumed = compose("logger=none", "test=false", "ckpt_path=last", *overrides)
    train(short_run(resumed, tmp_path / "stopped"))

    expected, got = training_state(tmp_path / "straight"), training_state(tmp_path / "stopped")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    return got


@pytest.mark.parametrize(
    ("stop", "batch"),
    [
        ("SIGTERM", 2),
        ("SIGINT", 3),
        pytest.param("SIGTERM", STEPS_PER_EPOCH, marks=pytest.mark.slow),  # at the epoch's end
    ],
)
def test_classifier_resumes_exactly(compose_train, tmp_path: Path, stop: str, batch: int) -> None:
    state = assert_resume_is_exact(compose_train, tmp_path, stop, batch)
    assert any(name.startswith("optimizer/") for name in state)


ONE_CYCLE = (
    "model.scheduler={_target_:torch.optim.lr_scheduler.OneCycleLR,_partial_:true,max_lr:0.005}"
)


@pytest.mark.parametrize("batch", [3, STEPS_PER_EPOCH])
def test_resume_is_exact_when_the_schedule_asks_for_the_loader_early(
    compose_train, tmp_path: Path, batch: int
) -> None:
    """OneCycleLR's total (estimated_stepping_batches) makes Lightning build the training loader,
    and draw its first batch, before it restores the loops: the loader's position must come from
    the checkpoint itself, or the resumed epoch restarts its shuffle (mid-epoch) or replays the
    first epoch's order (at an epoch's end)."""
    assert_resume_is_exact(compose_train, tmp_path, "SIGINT", batch, ONE_CYCLE)


@pytest.mark.slow  # each of these trains 3 times: ~20 s of CPU
def test_weight_averaging_resumes_exactly(compose_train, tmp_path: Path) -> None:
    ema = "+callbacks.ema._target_=lightning.pytorch.callbacks.EMAWeightAveraging"
    state = assert_resume_is_exact(compose_train, tmp_path, "SIGINT", 3, ema)
    assert any(name.startswith("current_model_state/") for name in state)
    assert "averaging_state/n_averaged" in state


@pytest.mark.slow
def test_gan_with_ema_resumes_exactly(compose_train, tmp_path: Path) -> None:
    state = assert_resume_is_exact(compose_train, tmp_path, "SIGINT", 3, "model=gan")
    assert "weights/generator_ema.n_averaged" in state


@pytest.fixture(scope="module")
def target_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("target") / "target.ckpt", seed=0)


@pytest.mark.slow
def test_advgan_resumes_exactly(compose_train, tmp_path: Path, target_ckpt: Path) -> None:
    advgan = ("model=advgan", f"model.target_ckpt={target_ckpt}")
    assert_resume_is_exact(compose_train, tmp_path, "SIGTERM", 3, *advgan)


SLURM_JOB = {
    "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
    "SLURM_NODELIST": "localhost", "SLURM_CPUS_PER_TASK": "1",
}  # fmt: skip


@pytest.mark.slow  # ~20 s: three trainings
def test_slurm_requeue_signal_saves_and_the_requeued_job_resumes_exactly(
    compose_train, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trainer=slurm: SIGUSR1 stops the run after its batch, saves hpc_ckpt_1.ckpt and calls
    `scontrol requeue <job>`; the requeued job (same run dir, no ckpt_path) resumes from it and
    ends like a straight run."""
    for name, value in SLURM_JOB.items():
        monkeypatch.setenv(name, value)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    def slurm_run(name: str, *overrides: str) -> None:
        cfg = compose_train("logger=none", "test=false", "trainer=slurm", *overrides)
        with open_dict(cfg):
            cfg.trainer.strategy = "auto"
            cfg.trainer.sync_batchnorm = False
            cfg.trainer.plugins[0].requeue_signal.name = "SIGUSR1"
        train(short_run(cfg, tmp_path / name))

    slurm_run("straight")
    with pytest.raises(SystemExit):  # stops after the batch, as SLURM's kill would soon
        slurm_run(
            "requeued", SIGNAL_AT, "+callbacks.stop.batch=3", "+callbacks.stop.signal=SIGUSR1"
        )
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    assert (tmp_path / "requeued" / "hpc_ckpt_1.ckpt").is_file()
    slurm_run("requeued")
    expected, got = training_state(tmp_path / "straight"), training_state(tmp_path / "requeued")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


@pytest.mark.slow
def test_eps_warm_up_resumes_exactly(compose_train, tmp_path: Path) -> None:
    """The warm-up's progress comes from the loop's batch count, which survives a resume."""
    assert_resume_is_exact(compose_train, tmp_path, "SIGINT", 3, "model.method.eps_warmup_epochs=2")
