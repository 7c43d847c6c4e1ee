"""DDP children of a Hydra job start that job alone: its overrides and run dir, never `-m`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import open_dict

import __main__
from advlab.utils import ddp_launch
from tests.conftest import REPO_ROOT


@pytest.fixture
def job_of_a_multirun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """HydraConfig as job 1 of `train.py -m seed=1,2 trainer=ddp_sim` sees it."""
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../configs"):
        cfg = compose("train", overrides=["seed=2", "trainer=ddp_sim"], return_hydra_config=True)
    job_dir = tmp_path / "multiruns" / "1"
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.job.name = "train"
        cfg.hydra.job.num = 1
        cfg.hydra.job.config_name = "train"
        cfg.hydra.runtime.output_dir = str(job_dir)
        cfg.hydra.runtime.cwd = str(REPO_ROOT)
    HydraConfig.instance().set_config(cfg)
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "seed=1,2", "trainer=ddp_sim"])
    monkeypatch.setattr(__main__, "__spec__", None)  # `python train.py`, not `python -m pytest`
    for module in ddp_launch.LAUNCHER_MODULES:  # undo the patch after the test
        monkeypatch.setattr(module, ddp_launch.HOOK, getattr(module, ddp_launch.HOOK))
    yield job_dir
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


def started_children(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], str]]:
    """Run the Trainer's DDP launcher for 2 processes; return each child's (command, cwd)."""
    started: list[tuple[list[str], str]] = []

    def fake_popen(command, env=None, cwd=None):
        started.append((list(command), cwd))

    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    for name in ddp_launch.LAUNCH_ENV:  # the launcher sets them: undo that after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    launcher = _SubprocessScriptLauncher(LightningEnvironment(), num_processes=2, num_nodes=1)
    launcher._call_children_scripts()
    return started


def test_the_trainers_ddp_child_runs_this_job_not_the_sweep(
    job_of_a_multirun: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ddp_launch.use_job_command_for_ddp_children()
    ((command, cwd),) = started_children(monkeypatch)
    assert "-m" not in command and "seed=1,2" not in command
    assert command[1:] == [
        str(REPO_ROOT / "train.py"), "--config-name", "train", "seed=2", "trainer=ddp_sim",
        "hydra.mode=RUN", f'hydra.run.dir="{job_of_a_multirun}"', "hydra.job.name=train_ddp_rank_1",
        "hydra.output_subdir=null",
    ]  # fmt: skip
    assert cwd == str(REPO_ROOT)
