"""Certification in eval.py (certify.*) and during training (callbacks.certified_accuracy): the
report's numbers follow from the per-image certificates, bad knobs are one line."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from advlab.callbacks import ApproximateCertifiedAccuracy
from advlab.defences import radius_cap
from advlab.errors import ConfigError
from advlab.eval import run
from advlab.evaluation.certification import (
    AttackSettings,
    CertificationResult,
    CertifySettings,
    certify_batches,
)
from advlab.evaluation.certification_report import markdown
from advlab.train import close_loggers, train
from tests.builders import make_classifier
from tests.conftest import shrink_for_cpu

# the attack suite cut to a few steps, for the run that certifies beside it
TINY_SUITE = (
    "attack=autoattack_fast", "attack.steps=2", "suite.attacks.pgd.attack.steps=2",
    "suite.attacks.square.attack.n_queries=10", "suite.eps_multiples=[0.0,1.0]",
    "sanity.steps_factor=2", "fail_on_suspect=false",  # a one-epoch model is not robust
)  # fmt: skip
CERTIFY = ("certify.sigma=0.25", "certify.n=40", "certify.n0=8", "certify.batch=64",
           "certify.only=true", "num_samples=6", "batch_size=4", "extras.print_config=false")  # fmt: skip


def _tiny_run(overrides: list[str], out: Path, data_dir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../configs"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    shrink_for_cpu(cfg, data_dir, out)
    with open_dict(cfg):
        del cfg.hydra
        cfg.trainer.max_epochs = 1
        cfg.trainer.limit_train_batches = 2
        cfg.trainer.limit_val_batches = 2
        cfg.trainer.enable_model_summary = False
    return cfg


@pytest.fixture(scope="module")
def smoothed_run(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> tuple[Path, dict]:
    """One tiny epoch of experiment=mnist_smooth: its last.ckpt and its final metrics."""
    out = tmp_path_factory.mktemp("smooth")
    overrides = ["experiment=mnist_smooth", "logger=none", "test=false",
                 "callbacks.certified_accuracy.n=50", "callbacks.certified_accuracy.n0=10",
                 "callbacks.certified_accuracy.num_samples=12", "callbacks.rich_progress_bar=null"]  # fmt: skip
    metrics = train(_tiny_run(overrides, out, mnist_dir))
    GlobalHydra.instance().clear()
    return out / "checkpoints" / "last.ckpt", metrics


@pytest.fixture
def compose_eval(tmp_path: Path, mnist_dir: Path) -> Iterator[Callable[..., DictConfig]]:
    def _compose(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize(version_base="1.3", config_path="../configs"):
            cfg = compose("eval", overrides=["logger=csv", *CERTIFY, *overrides],
                          return_hydra_config=True)  # fmt: skip
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path)
            cfg.paths.log_dir = str(tmp_path)
            cfg.data.data_dir = str(mnist_dir)
            cfg.data.download = False
            cfg.data.val_size = 16
            del cfg.hydra
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


def test_training_logs_approximate_certified_accuracy_with_its_cap(smoothed_run) -> None:
    _, metrics = smoothed_run
    accuracies = [metrics[f"cert_approx/acc_r{r}"] for r in ("0", "0.25", "0.5", "0.75")]
    assert all(0 <= a <= 1 for a in accuracies)
    assert accuracies == sorted(accuracies, reverse=True)  # certified at r => certified below r
    assert metrics["cert_approx/acc_r0.75"] == 0  # above the cap of n = 50
    assert metrics["cert_approx/radius_cap"] == pytest.approx(radius_cap(50, 0.001, 0.25))
    assert 0 <= metrics["cert_approx/acr"] <= metrics["cert_approx/radius_cap"]
    assert not [k for k in metrics if "robust_acc" in k]  # no Linf attack on a smoothing recipe


def test_the_callback_needs_a_sigma_from_itself_or_the_method() -> None:
    callback = ApproximateCertifiedAccuracy()
    with pytest.raises(ConfigError, match=r"^callbacks.certified_accuracy.sigma is null and the"):
        callback.setup(None, make_classifier("clean"), "fit")
    callback.setup(None, make_classifier("consistency"), "fit")
    assert callback.sigma == 0.25
    with pytest.raises(ConfigError, match=r"^callbacks.certified_accuracy.n0=9 > .*n=8"):
        ApproximateCertifiedAccuracy(sigma=0.5, n=8, n0=9)


def test_eval_certifies_and_reports_numbers_that_follow_from_the_certificates(
    compose_eval, smoothed_run, tmp_path: Path, monkeypatch
) -> None:
    ckpt, _ = smoothed_run
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = (f"ckpt_path={ckpt}", "logger=wandb", "certify.attack.radii=[0.5]",
                 "certify.attack.steps=2", "certify.attack.n=20")  # fmt: skip
    try:
        result = run(compose_eval(*overrides))
    finally:
        close_loggers()
    report = json.loads((tmp_path / "report.json").read_text())["certification"]
    assert report["radius_cap"] == pytest.approx(radius_cap(40, 0.001, 0.25))
    assert report["num_samples"] == 6 and result["num_samples"] == 6
    rows = (tmp_path / "certificates.tsv").read_text().splitlines()[1:]
    cells = [row.split("\t") for row in rows]
    assert len(cells) == 6
    for radius in (0.0, 0.25, 0.5):
        certified = sum(int(c[4]) and float(c[3]) >= radius for c in cells) / 6
        assert report["certified_accuracy"][f"{radius:g}"] == pytest.approx(certified, abs=1e-3)
    abstained = sum(c[2] == "-1" for c in cells) / 6
    assert report["abstain_rate"] == pytest.approx(abstained)
    assert report["average_certified_radius"] <= report["radius_cap"]
    assert report["seconds_per_image"] > 0
    assert set(report["attack"]["accuracy"]) == {"0.5"}
    markdown = (tmp_path / "report.md").read_text()
    assert "radius cap: **" in markdown and "| 0.5 |" in markdown
    assert (tmp_path / "certified_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (wandb_run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(wandb_run.glob("files/media/images/certify/curve*.png"))
    assert (wandb_run / "files" / "certificates.tsv").exists()


def test_certification_joins_the_attack_report_and_repeats_under_its_seed(
    compose_eval, smoothed_run, tmp_path: Path
) -> None:
    ckpt, _ = smoothed_run
    alone = run(compose_eval(f"ckpt_path={ckpt}", "certify.seed=3"))
    joined = run(compose_eval(f"ckpt_path={ckpt}", "certify.seed=3", "certify.only=false",
                              *TINY_SUITE))  # fmt: skip
    keys = ("certified_accuracy", "abstain_rate", "average_certified_radius")
    assert [alone[k] for k in keys] == [joined["certification"][k] for k in keys]
    report = json.loads((tmp_path / "report.json").read_text())
    assert {"headline", "sanity_checks", "certification"} <= set(report)
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.index("## Checks") < markdown.index("## Certified robustness")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("certify.sigma=0", r"certify.sigma must be > 0"),
        ("certify.sigma=-0.5", r"certify.sigma must be > 0"),
        ("certify.n0=100", r"certify.n0=100 > certify.n=40"),
        ("certify.alpha=1.5", r"certify.alpha must be in \(0, 1\)"),
        ("certify.radii=[0.5,-1]", r"certify.radii must hold L2 radii >= 0, got -1"),
        ("certify.attack.steps=0", r"certify.attack.steps must be an integer >= 1, got 0"),
        ("+certify.nn=3", r"certify has no knob nn; its knobs: sigma, n, n0"),
    ],
)
def test_bad_certify_knobs_are_one_line_errors_before_any_work(
    compose_eval, capsys, override: str, message: str
) -> None:
    cfg = compose_eval("ckpt_path=/nonexistent.ckpt", override)  # checked before the checkpoint
    with pytest.raises(SystemExit) as exit_info:
        run(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and re.search(message, err), err


def test_certified_accuracy_counts_only_right_answers_at_or_above_the_radius() -> None:
    settings = CertifySettings(sigma=0.5, n=100, n0=10)
    result = CertificationResult(
        settings,
        labels=torch.tensor([1, 2, 3, 4]),
        prediction=torch.tensor([1, 2, 0, -1]),  # right, right, wrong, abstained
        radius=torch.tensor([0.8, 0.2, 0.9, 0.0], dtype=torch.float64),
        p_lower=torch.zeros(4),
        seconds=torch.ones(4),
    )
    assert [result.certified_accuracy(r) for r in (0.0, 0.2, 0.5, 1.0)] == [0.5, 0.5, 0.25, 0.0]
    assert result.abstain_rate == 0.25
    assert result.average_certified_radius == pytest.approx((0.8 + 0.2) / 4)
    assert CertifySettings.from_config({"sigma": None}) is None


class InterruptedAfter(torch.nn.Module):
    """Votes for class 3 and raises KeyboardInterrupt (Ctrl-C) at forward pass `calls` + 1."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls = calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calls == 0:
            raise KeyboardInterrupt
        self.calls -= 1
        return torch.nn.functional.one_hot(torch.full((len(x),), 3), 10).float() + 0 * self.weight


def test_ctrl_c_keeps_the_images_certified_so_far() -> None:
    settings = CertifySettings(sigma=0.25, n=40, n0=8, batch=64, attack=AttackSettings((0.5,)))
    x, y = torch.rand(6, 1, 28, 28), torch.full((6,), 3)
    # one logits call for num_classes, then 2 per image (n0 draws, n draws): stop in image 3
    result = certify_batches(
        InterruptedAfter(1 + 2 * 2), [(x[:4], y[:4]), (x[4:], y[4:])], settings
    )
    assert (result.num_samples, result.requested, result.stopped_early) == (2, 6, True)
    assert result.radius.tolist() == pytest.approx([radius_cap(40, 0.001, 0.25)] * 2)
    assert result.certified_accuracy(0.0) == 1.0 and result.empirical == {}  # no attack
    assert result.as_dict()["requested_samples"] == 6
    assert "the first 2 of 6 images" in markdown(result)
    with pytest.raises(KeyboardInterrupt):  # nothing certified: nothing to report
        certify_batches(InterruptedAfter(1), [(x, y)], settings)
