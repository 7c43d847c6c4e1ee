"""SLURM configs compose into what SLURM and Lightning need; Optuna sweeps run jobs of their own."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import OmegaConf

from advlab.errors import ConfigError
from advlab.utils import instantiate
from advlab.utils.slurm import signal_named
from tests.test_train import TINY_RUN, _run_train_py


def compose_with_hydra(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../configs"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_slurm_launcher_runs_one_task_per_device() -> None:
    cfg = compose_with_hydra(
        "hydra/launcher=slurm", "trainer=slurm", "trainer.devices=8", "trainer.num_nodes=2"
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["tasks_per_node"], launcher["gpus_per_node"], launcher["nodes"]) == (8, 8, 2)
    assert launcher["max_num_timeout"] > 0 and launcher["signal_delay_s"] > 0


def test_slurm_trainer_requeues_on_the_signal_slurm_sends() -> None:
    cfg = compose_with_hydra("trainer=slurm")
    (environment,) = [instantiate(plugin) for plugin in cfg.trainer.plugins]
    assert isinstance(environment, SLURMEnvironment)
    assert environment.auto_requeue
    assert environment.requeue_signal == signal.SIGUSR2
    sbatch = (Path(__file__).parents[1] / "scripts" / "slurm" / "train.sbatch").read_text()
    assert "#SBATCH --signal=USR2@" in sbatch and "trainer=slurm" in sbatch


def test_unknown_signal_name_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown signal 'SIGFOO'"):
        signal_named("SIGFOO")


def test_run_dir_is_pinned_to_the_slurm_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    cfg = compose_with_hydra()
    run_dir = OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"]
    assert run_dir.endswith("/train/runs/4242")


def test_optuna_search_runs_each_trial_in_its_own_dir_with_ddp_sim(
    mnist_dir: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "optuna"
    result = _run_train_py(
        "hparams_search=mnist_optuna", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2", f"hydra.sweep.dir={sweep_dir}",
        f"data.data_dir={mnist_dir}", "trainer=ddp_sim", *TINY_RUN, "logger=wandb", "test=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    trials = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert trials == ["0", "1"]
    for trial in trials:
        assert len(list((sweep_dir / trial / "wandb").glob("offline-run-*"))) == 1
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert 0.0 <= best.best_value <= 1.0
