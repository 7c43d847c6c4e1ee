"""W&B mode resolution and the instantiate helper."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from advlab.errors import ConfigError
from advlab.utils import instantiate
from advlab.utils.pylogger import RankFilter
from advlab.utils.wandb import make_wandb_logger, online_problem, resolve_offline


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    return netrc


def test_auto_mode_is_offline_without_credentials(no_credentials: Path) -> None:
    assert resolve_offline("auto") is True


def test_auto_mode_goes_online_with_an_api_key(
    no_credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_offline("auto") is False


def test_auto_mode_reads_wandb_login_netrc(no_credentials: Path) -> None:
    no_credentials.write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    no_credentials.chmod(0o600)
    assert resolve_offline("auto") is False


def test_wandb_mode_env_and_explicit_modes_win(
    no_credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_offline("auto") is True
    assert resolve_offline("online") is False
    assert resolve_offline("offline") is True
    with pytest.raises(
        ConfigError, match=r"logger.wandb.mode='cloud' is not one of auto, online, offline"
    ):
        resolve_offline("cloud")


def test_offline_logger_drops_log_model_instead_of_failing(
    no_credentials: Path, tmp_path: Path
) -> None:
    logger = make_wandb_logger(mode="auto", log_model=True, save_dir=str(tmp_path), project="t")
    assert logger._offline is True
    assert logger._log_model is False


def test_instantiate_surfaces_user_errors_unwrapped() -> None:
    cfg = {
        "_target_": "advlab.models.RobustClassifier",
        "_recursive_": False,
        "net": {},
        "method": {"_target_": "advlab.methods.PGDAT", "atack": {}},
        "optimizer": {},
    }
    with pytest.raises(ConfigError, match=r"model.method \(PGDAT\) needs attack"):
        instantiate(cfg)


@pytest.mark.parametrize(
    ("env", "rank"),
    [
        ({}, 0),
        ({"LOCAL_RANK": "1"}, 1),
        ({"SLURM_PROCID": "9", "LOCAL_RANK": "1"}, 9),
        ({"RANK": "3"}, 3),
    ],
)
def test_log_lines_carry_the_process_rank(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], rank: int
) -> None:
    for variable in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    record = logging.LogRecord("advlab", logging.INFO, __file__, 1, "hello", None, None)
    assert RankFilter().filter(record)
    formatted = logging.Formatter("[rank %(rank)s] %(message)s").format(record)
    assert formatted == f"[rank {rank}] hello"


def test_wandb_run_id_is_pinned_to_the_run_dir(tmp_path: Path) -> None:
    first = make_wandb_logger(mode="offline", save_dir=str(tmp_path / "a"), project="p")
    again = make_wandb_logger(mode="offline", save_dir=str(tmp_path / "a"), project="p")
    other = make_wandb_logger(mode="offline", save_dir=str(tmp_path / "b"), project="p")
    assert first._id == again._id != other._id
    assert (tmp_path / "a" / "wandb_run_id.txt").read_text().strip() == first._id
    explicit = make_wandb_logger(mode="offline", save_dir=str(tmp_path / "a"), id="mine")
    assert explicit._id == "mine"


def test_online_without_key_or_network_falls_back_to_offline_quickly(
    no_credentials: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    assert online_problem() == "no API key (set WANDB_API_KEY or run `wandb login`)"
    logger = make_wandb_logger(mode="online", save_dir=str(tmp_path / "a"), project="t")
    assert logger._offline is True
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://advlab-no-such-host.invalid")  # DNS fails
    start = time.monotonic()
    problem = online_problem()
    assert problem is not None and problem.startswith("cannot reach advlab-no-such-host.invalid:80")
    assert time.monotonic() - start < 10
    with caplog.at_level(logging.WARNING):
        logger = make_wandb_logger(mode="auto", save_dir=str(tmp_path / "b"), project="t")
    assert logger._offline is True
    assert "W&B cannot go online: cannot reach" in caplog.text
