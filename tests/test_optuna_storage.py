"""Sweeps share one Optuna study through database storage: trials from two processes add up."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import optuna
import pytest
from packaging.version import Version

from tests.test_train import TINY_RUN, _run_train_py

JOIN = """
import optuna, sys
study = optuna.load_study(study_name="shared", storage=sys.argv[1])
study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
"""


def test_installed_optuna_and_sqlalchemy_work_together() -> None:
    if Version(version("optuna")) < Version("3"):
        assert Version(version("SQLAlchemy")) < Version("2"), (
            "optuna 2's database storage fails on SQLAlchemy 2: reinstall with `make install` "
            "(pyproject.toml pins SQLAlchemy<2 and alembic<1.14)"
        )


def test_two_processes_add_trials_to_one_sqlite_study(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    joined = subprocess.run(
        [sys.executable, "-c", JOIN, storage], capture_output=True, text=True, timeout=120
    )
    assert joined.returncode == 0, joined.stderr[-2000:]
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


@pytest.mark.slow  # three tiny trainings in two sweeps: ~1 min
def test_two_sweeps_share_one_study(mnist_dir: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    for name, trials in (("first", 2), ("second", 1)):
        result = _run_train_py(
            "hparams_search=mnist_optuna", f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=shared", f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweep.dir={tmp_path / name}", f"data.data_dir={mnist_dir}", "trainer=cpu",
            *TINY_RUN, "test=false",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
