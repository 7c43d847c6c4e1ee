"""eval.py: a checkpoint in, report.json / report.md / robustness_curve.png out; bad input refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import MissingConfigException
from omegaconf import open_dict

from advlab.errors import ConfigError
from advlab.eval import evaluate, run, suite_entries
from advlab.train import close_loggers, train
from tests.conftest import REPO_ROOT, config_options, shrink_for_cpu


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A RobustClassifier checkpoint from one tiny epoch of train.py's code path."""
    out = tmp_path_factory.mktemp("trained")
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../configs"):
        cfg = compose(
            "train", overrides=["logger=none", "test=false", "callbacks.adversarial_eval=null"],
            return_hydra_config=True,
        )  # fmt: skip
    HydraConfig().set_config(cfg)
    shrink_for_cpu(cfg, mnist_dir, out)
    with open_dict(cfg):
        del cfg.hydra
        cfg.trainer.max_epochs = 1
        cfg.trainer.limit_train_batches = 2
        cfg.trainer.limit_val_batches = 1
        cfg.trainer.enable_model_summary = False
    train(cfg)
    GlobalHydra.instance().clear()
    return sorted((out / "checkpoints").glob("*.ckpt"))[0]  # whichever the policy kept


def test_report_files_exist_and_parse(
    compose_eval, checkpoint: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    try:
        result = evaluate(compose_eval(f"ckpt_path={checkpoint}", "logger=wandb"))
    finally:
        close_loggers()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["num_samples"] == 12 and 0 <= report["clean_acc"] <= 1
    assert report["headline"]["label"] == "AutoAttack (apgd-ce+apgd-t)"
    assert report["headline"]["eps"] == 0.3
    runs = {(r["attack"], r["eps"]) for r in report["results"]}
    assert {("fgsm", 0.0), ("pgd", 0.15), ("square", 0.3), ("headline", 0.3)} <= runs
    assert ("pgd", 1.0) in runs and ("pgd_more_steps", 0.3) in runs  # sanity re-runs
    names = [c["name"] for c in report["sanity_checks"]]
    assert len(names) >= 10  # 4 model probes + 6 attack checks (+ AutoAttack's own flags)
    assert "input gradients do not vanish" in names
    assert all(c["status"] in ("pass", "fail", "skip") for c in report["sanity_checks"])
    assert report["sanity_passed"] == result["sanity_passed"]
    assert report["verdict"] == "TRUSTWORTHY" or report["verdict"].startswith("SUSPECT: ")
    bench = report["robustbench"]
    assert bench["threat_model"] == "Linf" and bench["eps"] == 0.3 and bench["n_ex"] == 12
    assert bench["autoattack_acc"] == round(100 * report["headline"]["robust_acc"], 2)
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.splitlines()[0].startswith(f"**{report['verdict']}")  # the verdict leads
    assert "| attack | eps 0 | eps 0.15 | eps 0.3 |" in markdown
    assert "## Checks" in markdown
    assert (tmp_path / "robustness_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run.glob("files/media/images/eval/robustness_curve*.png"))
    assert (run / "files" / "report.json").exists()


def _fake_gan_checkpoint(path: Path) -> Path:
    torch.save(
        {"state_dict": {"generator.fc.weight": torch.zeros(2, 2)},
         "hyper_parameters": {"latent_dim": 64}},
        path,
    )  # fmt: skip
    return path


def test_a_gan_checkpoint_is_refused(compose_eval, tmp_path: Path) -> None:
    ckpt = _fake_gan_checkpoint(tmp_path / "gan.ckpt")
    with pytest.raises(ConfigError, match=r"is not a RobustClassifier checkpoint \(it holds gen"):
        evaluate(compose_eval(f"ckpt_path={ckpt}", "logger=none"))


def test_a_file_that_is_no_checkpoint_is_refused(compose_eval, tmp_path: Path) -> None:
    junk = tmp_path / "notes.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=r"is not a PyTorch checkpoint"):
        evaluate(compose_eval(f"ckpt_path={junk}", "logger=none"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("suite.eps=1.5", r"suite.eps: epsilon=1.5 is outside \[0, 1\]"),
        ("suite.eps_multiples=[0.5,4]", r"suite.attacks.fgsm: epsilon=1.2 is outside \[0, 1\]"),
        ("suite.attacks.square.eps_multiples=[-1]", r"suite.attacks.square: epsilon=-0.3 is out"),
        (
            "+suite.attacks.square.epsilons=[0.1]",
            r"suite.attacks.square: give epsilons or "
            r"eps_multiples, not both",
        ),
        ("sanity.reference=pgd50", r"sanity.reference='pgd50' is not an attack of the suite"),
    ],
)
def test_bad_suite_settings_are_refused_before_loading(
    compose_eval, override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        suite_entries(compose_eval("ckpt_path=unused", override))


def test_a_bad_headline_attack_setting_is_one_clear_error(compose_eval, checkpoint) -> None:
    cfg = compose_eval(f"ckpt_path={checkpoint}", "logger=none", "attack.version=fast")
    with pytest.raises(ConfigError, match=r"^attack.version='fast' is not one of standard, custom"):
        evaluate(cfg)


def test_unknown_attack_names_the_available_ones(compose_eval) -> None:
    with pytest.raises(MissingConfigException, match=r"Could not find 'attack/autoatack'") as err:
        compose_eval("attack=autoatack")
    assert "autoattack_fast" in str(err.value)


@pytest.mark.parametrize("option", [o for o in config_options("suite") if "epoch" not in o])
def test_eval_suites_compose_and_parse(compose_eval, option: str) -> None:
    entries, eps, settings = suite_entries(compose_eval("ckpt_path=unused", f"suite={option}"))
    names = {e.name for e in entries}
    assert {settings.reference, settings.single_step, settings.gradient_free, "headline"} <= names
    assert 0 < eps <= 0.3


def _eval_py(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "eval.py", *overrides],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow  # ~20 s of a python eval.py process starting up; the in-process tests cover the rest
def test_eval_py_reports_a_gan_checkpoint_in_one_line(tmp_path: Path) -> None:
    ckpt = _fake_gan_checkpoint(tmp_path / "g.ckpt")
    result = _eval_py(f"hydra.run.dir={tmp_path / 'run'}", "logger=none", f"ckpt_path={ckpt}")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("advlab: error:")]
    assert len(errors) == 1 and "is not a RobustClassifier checkpoint" in errors[0]
    assert "Traceback" not in result.stderr


def test_two_models_at_once_are_refused(compose_eval) -> None:
    with pytest.raises(ConfigError, match=r"\(got ckpt_path, torchscript\)$"):
        evaluate(compose_eval("ckpt_path=a.ckpt", "torchscript=a.pt", "logger=none"))


@pytest.mark.parametrize(
    ("override", "message"),
    [("ckpt_path=missing.ckpt", "ckpt_path=missing.ckpt: no checkpoint at missing.ckpt"),
     ("ckpt_path=null", "give exactly one model to evaluate: ckpt_path=<advlab .ckpt>, or "
      "net._target_=<pkg.module.Class> weights=<state_dict .pt>, or torchscript=<file.pt>"),
     ("torchscript=a.pt", "torchscript=a.pt: no file there"),
     ("batch_size=0", "batch_size must be >= 1, got 0")],
)  # fmt: skip
def test_run_turns_bad_input_into_one_line_and_exit_2(
    compose_eval, capsys, override: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(compose_eval(override, "logger=none"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"advlab: error: {message}\n"
