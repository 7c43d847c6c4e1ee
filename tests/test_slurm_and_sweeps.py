"""SLURM configs compose into what SLURM and Lightning need; Optuna sweeps run jobs of their own."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import submitit
from hydra import compose, initialize
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.types import HydraContext
from hydra.utils import instantiate as hydra_instantiate
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


def test_the_slurm_launcher_builds_submitits_executor_and_its_sbatch_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hydra/launcher=slurm through hydra-submitit-launcher into submitit's real SlurmExecutor,
    which rejects parameters it does not know; only the submission itself is replaced. submitit
    looks for `srun` on PATH, so a stand-in is put there."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    submitted: dict[str, Any] = {}

    def map_array(executor: submitit.AutoExecutor, fn: Any, *job_args: Any) -> list:
        submitted["jobs"] = len(job_args[0])
        submitted["sbatch"] = executor._executor._make_submission_file_text("python job", "0")
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    overrides = [
        "hydra/launcher=slurm", "trainer=slurm", "trainer.devices=4", "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu", "hydra.launcher.setup=[source .venv/bin/activate]",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]  # fmt: skip
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../configs"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        launcher = hydra_instantiate(cfg.hydra.launcher)
        loader = GlobalHydra.instance().config_loader()
        context = HydraContext(config_loader=loader, callbacks=Callbacks())
        launcher.setup(hydra_context=context, task_function=lambda _: None, config=cfg)
        launcher.launch([["seed=1"], ["seed=2"]], initial_job_idx=0)

    assert submitted["jobs"] == 2
    lines = submitted["sbatch"].splitlines()
    for expected in (
        "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu", "#SBATCH --signal=USR2@120", "#SBATCH --time=240",
        "source .venv/bin/activate",
    ):  # fmt: skip
        assert expected in lines, submitted["sbatch"]
    assert lines[-1].startswith("srun ") and lines[-1].endswith("python job")


@pytest.mark.slow  # ~30 s: two tiny trainings in submitit's own subprocesses
def test_a_sweep_runs_through_submitits_local_executor(mnist_dir: Path, tmp_path: Path) -> None:
    """The same launcher plugin with submitit's local executor: jobs pickled, run in their own
    processes and collected, each in its own run dir with a checkpoint."""
    sweep = tmp_path / "sweep"
    result = _run_train_py(
        "-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}",
        f"data.data_dir={mnist_dir}", "trainer=cpu", *TINY_RUN, "logger=none", "seed=1,2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2


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
