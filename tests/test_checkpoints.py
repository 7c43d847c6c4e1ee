"""advlab.checkpoints: a checkpoint from anywhere runs no code, and what advlab writes loads safely.

Each payload below is checked to be real first (loading it the unsafe way does create its
marker file), so a refusal test cannot pass because the payload was a dud.
"""

from __future__ import annotations

import csv
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
import pytest
import torch
from omegaconf import open_dict

from advlab.checkpoints import check_targets, load_classifier_net, read_checkpoint, trust_targets
from advlab.errors import ConfigError
from advlab.models import RobustClassifier
from advlab.train import train
from tests.conftest import REPO_ROOT


@pytest.fixture(autouse=True)
def _no_trust_leaks() -> Iterator[None]:
    """trusted_targets is process-wide: every test starts and ends with none."""
    trust_targets([])
    yield
    trust_targets([])


class _Payload:
    """Unpickling this creates `marker`: what a hostile .ckpt would do with a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _classifier_parts(compose_train: Callable[..., Any], **net: Any) -> tuple[dict, dict]:
    """(hyperparameters, state_dict) of a freshly built `model=robust`, from the real configs,
    so they follow RobustClassifier's constructor when it changes; `net` replaces model.net."""
    cfg = compose_train("logger=none")
    if net:
        with open_dict(cfg):
            cfg.model.net = net
    model = hydra.utils.instantiate(cfg.model)
    return dict(model.hparams), model.state_dict()


def _save(path: Path, hparams: dict, state: dict, **extra: Any) -> Path:
    torch.save({"state_dict": state, "hyper_parameters": hparams, **extra}, path)
    return path


@pytest.fixture
def malicious_ckpt(tmp_path: Path, compose_train) -> tuple[Path, Path]:
    """(a .ckpt that looks like a classifier's but carries a pickle payload, its marker)."""
    hparams, state = _classifier_parts(compose_train)
    marker = tmp_path / "pickle_ran"
    return _save(tmp_path / "evil.ckpt", hparams, state, payload=_Payload(marker)), marker


@pytest.fixture
def hub_target(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """(a net config whose building imports a hubconf.py that creates a marker, the marker)."""
    repo, marker = tmp_path / "hubrepo", tmp_path / "hubconf_ran"
    repo.mkdir()
    (repo / "hubconf.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n\n"
        "def x(**kwargs):\n    import torch\n    return torch.nn.Linear(1, 1)\n"
    )
    net = {"_target_": "torch.hub.load", "repo_or_dir": str(repo), "model": "x",
           "source": "local", "trust_repo": True}  # fmt: skip
    return net, marker


@pytest.fixture
def hub_ckpt(tmp_path: Path, compose_train, hub_target) -> tuple[Path, Path]:
    hparams, state = _classifier_parts(compose_train)
    net, marker = hub_target
    return _save(tmp_path / "hub.ckpt", {**hparams, "net": net}, state), marker


def test_the_payloads_are_real(malicious_ckpt, hub_target) -> None:
    path, marker = malicious_ckpt
    torch.load(path, weights_only=False)
    assert marker.exists()
    net, hub_marker = hub_target
    hydra.utils.instantiate(net)
    assert hub_marker.exists()


# ---- a pickle that would run code -------------------------------------------------------------
PICKLE_REFUSED = r"refused: loading it would run code \(it calls .*open\)"


def test_load_from_checkpoint_refuses_a_pickle_payload(malicious_ckpt) -> None:
    path, marker = malicious_ckpt
    with pytest.raises(ConfigError, match=rf"^ckpt_path={path} {PICKLE_REFUSED}"):
        RobustClassifier.load_from_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["model.target_ckpt", "model.metrics.feature_ckpt"])
def test_load_classifier_net_refuses_a_pickle_payload(malicious_ckpt, where: str) -> None:
    path, marker = malicious_ckpt
    with pytest.raises(ConfigError, match=rf"^{where}={path} {PICKLE_REFUSED}"):
        load_classifier_net(path, where)
    assert not marker.exists()


def test_feature_extractor_refuses_a_pickle_payload(malicious_ckpt) -> None:
    from advlab.quality import load_classifier_features

    path, marker = malicious_ckpt
    with pytest.raises(ConfigError, match=rf"^model.metrics.feature_ckpt={path} {PICKLE_REFUSED}"):
        load_classifier_features(path, (1, 28, 28))
    assert not marker.exists()


def test_old_style_and_plain_pickle_files_run_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "legacy.ckpt"
    torch.save({"x": _Payload(marker)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(ConfigError, match=PICKLE_REFUSED):
        read_checkpoint(path, "ckpt_path")
    with path.open("wb") as file:
        pickle.dump({"x": _Payload(marker)}, file, protocol=4)
    with pytest.raises(ConfigError, match=r"is not a PyTorch checkpoint \(.*Unsupported operand"):
        read_checkpoint(path, "ckpt_path")
    assert not marker.exists()


def _entry_point(script: str, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, script, "logger=none", *overrides],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("advlab: error: ")
    return lines[0]


def test_eval_py_refuses_a_pickle_payload_in_one_line(malicious_ckpt, tmp_path: Path) -> None:
    path, marker = malicious_ckpt
    line = _one_error_line(
        _entry_point("eval.py", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'run'}")
    )
    assert f"ckpt_path={path} refused: loading it would run code" in line
    assert not marker.exists()


def test_train_py_refuses_to_resume_a_pickle_payload(
    malicious_ckpt, tmp_path: Path, mnist_dir: Path
) -> None:
    path, marker = malicious_ckpt
    run_dir, data_dir = f"hydra.run.dir={tmp_path / 'run'}", f"data.data_dir={mnist_dir}"
    line = _one_error_line(_entry_point("train.py", f"ckpt_path={path}", run_dir, data_dir))
    assert f"ckpt_path={path} refused: loading it would run code" in line
    assert not marker.exists()


# ---- a _target_ that would run code -----------------------------------------------------------
HUB_REFUSED = (
    r"names _target_ torch.hub.load, which advlab does not build from a checkpoint. If you "
    r"trust this file, allow it: trusted_targets=\[torch.hub.load\]$"
)


def test_load_from_checkpoint_refuses_a_hub_target(hub_ckpt) -> None:
    path, marker = hub_ckpt
    with pytest.raises(ConfigError, match=rf"^ckpt_path={path}: net {HUB_REFUSED}"):
        RobustClassifier.load_from_checkpoint(path)
    with pytest.raises(ConfigError, match=rf"^model.target_ckpt={path}: net {HUB_REFUSED}"):
        load_classifier_net(path, "model.target_ckpt")
    assert not marker.exists()


def test_eval_py_refuses_a_hub_target_in_one_line(hub_ckpt, tmp_path: Path) -> None:
    path, marker = hub_ckpt
    line = _one_error_line(
        _entry_point("eval.py", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'run'}")
    )
    assert "names _target_ torch.hub.load" in line and "trusted_targets=[torch.hub.load]" in line
    assert not marker.exists()


@pytest.mark.parametrize(
    ("target", "resolves_to"),
    [("torch.nn.modules.module.torch.hub.load", "torch.hub.load"),
     ("torch.nn.parallel.distributed.os.system", "posix.system")],
)  # fmt: skip
def test_a_trusted_looking_name_defined_elsewhere_is_refused(
    hub_target, target: str, resolves_to: str
) -> None:
    net, marker = hub_target
    config = {"net": {**net, "_target_": target}}
    with pytest.raises(ConfigError, match=rf"_target_ {target} \(it is {resolves_to}\), which"):
        check_targets(config, "ckpt_path=x.ckpt")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [({"net": {"_target_": "torch.nn.${x}", "x": "Linear"}}, r"net._target_ holds the interp"),
     ({"a": [{"b": {"_target_": "builtins.exec"}}]}, r"a\[0\].b names _target_ builtins.exec"),
     ({"net": {"_target_": "torch.nn.Module._apply"}}, r"names _target_ torch.nn.Module._apply"),
     ({"net": {"_target_": "advlab.nets.NoSuchNet"}}, r"NoSuchNet, which cannot be imported"),
     ({"net": {"_target_": "torch.nn.Linear", "in_features": "${oc.env:HOME}"}},
      r"net.in_features holds the interpolation")],
)  # fmt: skip
def test_other_ways_round_the_check_are_refused(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_targets(config, "ckpt_path=x.ckpt")


def test_shipped_targets_pass_the_check() -> None:
    check_targets(
        {"net": {"_target_": "advlab.nets.SmallCNN"}, "opt": {"_target_": "torch.optim.Adam"},
         "sched": {"_target_": "torch.optim.lr_scheduler.OneCycleLR"},
         "attacks": [{"_target_": "torchattacks.PGD"}, {"_target_": "torchvision.models.resnet18"}]},
        "ckpt_path=x.ckpt",
    )  # fmt: skip


# ---- trusted_targets ----------------------------------------------------------------------------
@pytest.fixture
def own_net_ckpt(tmp_path: Path, compose_train, monkeypatch) -> Path:
    """A classifier checkpoint whose net is a class of the user's own (tmp) package."""
    package = tmp_path / "mynets"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import torch\n\n\nclass TinyNet(torch.nn.Module):\n    num_classes = 10\n\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.fc = torch.nn.Linear(784, 10)\n\n"
        "    def forward(self, x):\n        return self.fc(x.flatten(1))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    hparams, state = _classifier_parts(compose_train, _target_="mynets.TinyNet")
    return _save(tmp_path / "own.ckpt", hparams, state)


@pytest.mark.parametrize("prefix", ["mynets.", "mynets", "mynets.TinyNet"])
def test_trusted_targets_allows_a_users_own_net(own_net_ckpt: Path, prefix: str) -> None:
    with pytest.raises(ConfigError, match=r"allow it: trusted_targets=\[mynets.TinyNet\]"):
        RobustClassifier.load_from_checkpoint(own_net_ckpt)
    trust_targets([prefix])
    model = RobustClassifier.load_from_checkpoint(own_net_ckpt)
    assert type(model.net).__name__ == "TinyNet" and model(torch.rand(2, 1, 28, 28)).shape == (
        2,
        10,
    )
    trust_targets(["mynetsextra."])  # a prefix is a whole package or module name
    with pytest.raises(ConfigError, match=r"names _target_ mynets.TinyNet"):
        RobustClassifier.load_from_checkpoint(own_net_ckpt)


def test_eval_applies_trusted_targets_from_its_config(
    own_net_ckpt: Path, tmp_path: Path, monkeypatch
) -> None:
    """eval's config reaches the check: loading succeeds, then a stub stops the evaluation."""
    from hydra import compose, initialize
    from hydra.core.global_hydra import GlobalHydra

    import advlab.eval

    class Loaded(Exception):
        pass

    def stop(model, datamodule) -> None:
        raise Loaded(type(model.net).__name__)

    monkeypatch.setattr(advlab.eval, "check_model_fits_data", stop)
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../configs"):
        cfg = compose(
            "eval", overrides=[f"ckpt_path={own_net_ckpt}", "trusted_targets=[mynets.]",
                               "device=cpu", f"paths.output_dir={tmp_path}"],
        )  # fmt: skip
    GlobalHydra.instance().clear()
    assert list(cfg.trusted_targets) == ["mynets."]
    with pytest.raises(Loaded, match="TinyNet"):
        advlab.eval.evaluate(cfg)
    trust_targets([])
    with open_dict(cfg):
        cfg.trusted_targets = []
    with pytest.raises(ConfigError, match=r"trusted_targets=\[mynets.TinyNet\]"):
        advlab.eval.evaluate(cfg)


@pytest.mark.parametrize(
    ("value", "message"),
    [("mynets.", r"trusted_targets=mynets. must be a list of prefixes, e.g. trusted_targets=\[my"),
     ([""], r"trusted_targets has an empty prefix, which would trust every _target_")],
)  # fmt: skip
def test_bad_trusted_targets_are_refused(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        trust_targets(value)


# ---- files that are no checkpoint ---------------------------------------------------------------
def _truncated(path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(100)}}, path)
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize(
    ("write", "message"),
    [(lambda p: p.write_bytes(b""), r"is not a PyTorch checkpoint \(the file is empty\)$"),
     (_truncated, r"is not a PyTorch checkpoint \(truncated or corrupt\? RuntimeError: "),
     (lambda p: p.write_text("epoch,acc\n0,0.9\n"), r"is not a PyTorch checkpoint \(truncated"),
     (lambda p: p.write_text("notes"), r"is not a PyTorch checkpoint \(.* Unsupported operand 110\)$"),
     (lambda p: torch.save(torch.zeros(3), p), r"holds a Tensor, not a checkpoint$"),
     (lambda p: torch.save({"epoch": 1}, p), r"is not a Lightning checkpoint \(no state_dict\)$")],
)  # fmt: skip
def test_files_that_are_no_checkpoint_are_one_line_each(
    tmp_path: Path, write: Callable[[Path], Any], message: str
) -> None:
    path = tmp_path / "bad.ckpt"
    write(path)
    with pytest.raises(ConfigError, match=rf"^ckpt_path={path} {message}") as error:
        RobustClassifier.load_from_checkpoint(path)
    assert "\n" not in str(error.value) and len(str(error.value).replace(str(path), "")) < 160


def test_a_missing_file_and_no_path_are_one_line_each(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^ckpt_path=.*none.ckpt: no file there$"):
        read_checkpoint(tmp_path / "none.ckpt", "ckpt_path")
    with pytest.raises(ConfigError, match=r"^ckpt_path is required"):
        read_checkpoint(None, "ckpt_path")


def test_eval_reads_a_checkpoint_once(compose_train, tmp_path: Path, monkeypatch) -> None:
    from omegaconf import OmegaConf

    from advlab.loading import load_model

    hparams, state = _classifier_parts(compose_train)
    path = _save(tmp_path / "ok.ckpt", hparams, state)
    reads, load = [], torch.load

    def counted_load(*args: Any, **kwargs: Any) -> Any:
        reads.append(kwargs)
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", counted_load)
    cfg = OmegaConf.create({"ckpt_path": str(path), "net": {"_target_": None}})
    model, _ = load_model(cfg, torch.device("cpu"))
    assert not model.training and reads == [{"map_location": "cpu", "weights_only": True}]


def test_hyperparameters_a_class_no_longer_takes_are_dropped_with_a_warning(
    compose_train, tmp_path: Path, caplog
) -> None:
    hparams, state = _classifier_parts(compose_train)
    path = _save(tmp_path / "old.ckpt", {**hparams, "retired_knob": 0.5}, state)
    RobustClassifier.load_from_checkpoint(path)
    assert (
        "ignoring hyperparameters RobustClassifier no longer takes: ['retired_knob']" in caplog.text
    )


# ---- what advlab writes loads with weights_only=True ------------------------------------------
def test_a_real_run_with_ema_and_one_cycle_writes_safe_checkpoints_and_resumes(
    compose_train, tmp_path: Path
) -> None:
    """mnist_fgsm_rs: EMA weight averaging, a OneCycleLR schedule, RNG states, DataModule
    hyperparameters; all must come back with weights_only=True, and resuming must use them."""

    def tiny(cfg):
        with open_dict(cfg):
            cfg.trainer.max_epochs = 2
            cfg.trainer.limit_train_batches = 2
            cfg.trainer.limit_val_batches = 1
            cfg.trainer.enable_model_summary = False
            cfg.callbacks.adversarial_eval = None
            cfg.callbacks.model_checkpoint.save_top_k = -1  # keep epoch_000.ckpt to resume
        return cfg

    overrides = ("experiment=mnist_fgsm_rs", "logger=csv", "test=false")
    cfg = tiny(compose_train(*overrides))
    assert "ema" in cfg.callbacks and "OneCycleLR" in cfg.model.scheduler._target_
    train(cfg)
    first = tmp_path / "checkpoints" / "epoch_000.ckpt"
    checkpoint = torch.load(first, weights_only=True)
    assert checkpoint["global_step"] == 2
    callbacks = " ".join(checkpoint["callbacks"])
    assert "EMAWeightAveraging" in callbacks and "RandomStateCheckpoint" in callbacks
    assert checkpoint["lr_schedulers"] and checkpoint["datamodule_hyper_parameters"]
    assert RobustClassifier.load_from_checkpoint(first).hparams == checkpoint["hyper_parameters"]
    last = tmp_path / "checkpoints" / "last.ckpt"
    uninterrupted = torch.load(last, weights_only=True)

    train(tiny(compose_train(*overrides, f"ckpt_path={first}")))
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 4
    with open(tmp_path / "csv" / "version_1" / "metrics.csv") as f:
        assert {row["epoch"] for row in csv.DictReader(f)} == {"1"}  # went on, did not restart
    for key, value in uninterrupted["state_dict"].items():  # the same run, stopped and resumed
        torch.testing.assert_close(resumed["state_dict"][key], value, msg=key)
