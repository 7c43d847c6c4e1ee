"""AdversarialEvalCallback: exact numbers across ranks, gradients under inference mode, media."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from torch import nn

from advlab.callbacks.adversarial_eval import AdversarialEvalCallback
from advlab.callbacks.adversarial_media import adversarial_strips
from advlab.errors import ConfigError
from advlab.evaluation import AttackStats, attack_batch, attack_mode
from advlab.evaluation.runner import run_attack
from advlab.evaluation.suite import build_attack_at
from advlab.nets import SmallCNN
from advlab.train import close_loggers, train
from advlab.utils import instantiate_callbacks
from tests.conftest import REPO_ROOT, config_options

FGSM = {"_target_": "torchattacks.FGSM", "norm": "Linf", "eps": 0.3}
SUITE = {"epsilons": [0.1, 0.3], "attacks": {"fgsm": {"attack": FGSM}}}


@pytest.fixture(scope="module")
def net_and_data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = SmallCNN(channels=(8, 16), hidden=32).eval()
    x = torch.rand(10, 1, 28, 28)
    y = torch.randint(0, 10, (10,))
    return net, x, y


def test_shards_reduce_to_the_single_process_numbers(net_and_data) -> None:
    """What DDP does: rank r attacks items r, r + 2, ...; gathered sums equal one big run."""
    net, x, y = net_and_data
    whole = run_attack(net, FGSM, 0.3, [(x, y)])
    shards = [run_attack(net, FGSM, 0.3, [(x[r::2], y[r::2])]) for r in range(2)]
    gathered = torch.stack([s.to_tensor() for s in shards])  # what all_gather returns
    reduced = AttackStats.reduce(gathered)
    for name in ("count", "clean_correct", "robust_correct", "fooled"):
        assert getattr(reduced, name) == getattr(whole, name)
    for name in ("linf_sum", "l2_sum", "linf_max", "l2_max"):
        assert getattr(reduced, name) == pytest.approx(getattr(whole, name), rel=1e-6)
    assert reduced.robust_acc == whole.robust_acc
    assert reduced.seconds == max(s.seconds for s in shards)


def test_attack_runs_in_eval_mode_with_gradients_under_inference_mode(net_and_data) -> None:
    net, x, y = net_and_data
    seen = []
    net.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    net.train()
    with torch.inference_mode():
        x_inf, y_inf = x.clone(), y.clone()  # inference tensors, as Lightning hands them over
        outcome = attack_batch(net, build_attack_at(FGSM, net, 0.3, "t"), x_inf, y_inf, 0.3, "Linf")
    assert net.training and seen and not any(seen)
    assert outcome.x_adv.requires_grad is False
    assert (outcome.x_adv - x).abs().max() == pytest.approx(0.3)
    net.eval()
    net._forward_pre_hooks.clear()


def test_attack_mode_restores_train_mode_after_an_error() -> None:
    net = nn.Linear(2, 2).train()
    with pytest.raises(RuntimeError), attack_mode(net):
        assert not net.training and torch.is_grad_enabled()
        raise RuntimeError
    assert net.training


def test_strips_show_clean_adversarial_and_perturbation(net_and_data) -> None:
    net, x, y = net_and_data
    attack = build_attack_at(FGSM, net, 0.3, "t")
    outcome = attack_batch(net, attack, x, y, 0.3, "Linf")
    images, captions = adversarial_strips(outcome, 4)
    assert len(images) == len(captions) == 4
    assert images[0].shape == (28, 3 * 28 + 4) and images[0].dtype.name == "uint8"
    assert captions[0].startswith(f"true {int(y[0])} | clean ")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_samples": 0}, r"num_samples must be >= 1"),
        ({"save_batches": True, "save_dir": None}, r"save_batches=true needs"),
        ({"suite": {"epsilons": [2.0], "attacks": {"fgsm": {"attack": FGSM}}}},
         r"suite.attacks.fgsm: epsilon=2 is outside \[0, 1\]"),
        ({"suite": {"attacks": {"cw": {"attack": {"_target_": "torchattacks.CW", "norm": "L2"}}}}},
         r"has no eps"),
    ],
)  # fmt: skip
def test_bad_callback_settings_are_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AdversarialEvalCallback(**{"suite": SUITE, **kwargs})


@pytest.mark.parametrize("option", config_options("suite"))
def test_every_suite_composes_as_the_per_epoch_suite(compose_train, option: str) -> None:
    cfg = compose_train(f"suite@callbacks.adversarial_eval.suite={option}")
    (callback,) = [
        c for c in instantiate_callbacks(cfg.callbacks) if isinstance(c, AdversarialEvalCallback)
    ]
    assert callback.entries and all(e.epsilons for e in callback.entries)


@pytest.mark.parametrize("experiment", ["cifar10_pgd_at", "cifar10_fgsm_rs", "cifar10_trades"])
def test_cifar10_recipes_attack_at_cifar10_budgets(compose_train, experiment: str) -> None:
    cfg = compose_train(f"experiment={experiment}")
    (callback,) = [
        c for c in instantiate_callbacks(cfg.callbacks) if isinstance(c, AdversarialEvalCallback)
    ]
    assert [max(e.epsilons) for e in callback.entries] == pytest.approx([8 / 255] * 3)
    none = compose_train(f"experiment={experiment}", "callbacks=none")
    assert instantiate_callbacks(none.callbacks) == []


def _tiny_fit(cfg, epochs: int = 1) -> None:
    with open_dict(cfg):
        cfg.trainer.max_epochs = epochs
        cfg.trainer.limit_train_batches = 2
        cfg.trainer.enable_model_summary = False
        cfg.callbacks.adversarial_eval.num_samples = 12
        cfg.callbacks.adversarial_eval.batch_size = 5
        cfg.callbacks.adversarial_eval.suite.attacks.pgd.attack.steps = 2
        cfg.callbacks.adversarial_eval.suite.attacks.apgd.attack.steps = 2


def test_callback_logs_every_attack_and_eps_with_w_and_b_grids(
    compose_train, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train(
        "logger=wandb", "test=false", "callbacks.adversarial_eval.save_batches=true"
    )
    _tiny_fit(cfg)
    try:
        metrics = train(cfg)
    finally:
        close_loggers()  # what run() does: the next test must not reuse this W&B run
    for attack in ("fgsm", "pgd"):
        for eps in ("0.075", "0.15", "0.3"):  # suite/epoch.yaml: 1/4, 1/2 and all of MNIST's 0.3
            key = f"adv/{attack}/eps{eps}"
            assert 0 <= metrics[f"{key}/robust_acc"] <= 1
            assert metrics[f"{key}/linf_max"] <= float(eps) + 1e-5
            assert f"{key}/success_rate" in metrics and f"{key}/seconds" in metrics
    assert 0 <= metrics["adv/apgd/eps0.3/robust_acc"] <= metrics["adv/clean_acc"]
    assert not [k for k in metrics if k.startswith("adv/apgd/eps0.15")]  # APGD: at the budget only
    assert metrics["adv/seconds"] > 0 and 0 < metrics["adv/epoch_share"] < 1
    grids = list((tmp_path / "wandb").glob("offline-run-*/files/media/images/adv/*.png"))
    assert {p.name.split("_")[0] for p in grids} == {"fgsm", "pgd", "apgd"}
    saved = torch.load(tmp_path / "adversarial" / "epoch_000" / "pgd_eps0.3_rank0.pt")
    assert saved["x_adv"].shape == (12, 1, 28, 28) and saved["eps"] == 0.3


def test_callback_attacks_under_inference_mode_and_every_n_epochs(compose_train) -> None:
    cfg = compose_train(
        "logger=csv", "test=false", "trainer.inference_mode=true", "model.val_attack=null",
        "callbacks.model_checkpoint=null", "callbacks.adversarial_eval.every_n_epochs=2",
    )  # fmt: skip
    _tiny_fit(cfg, epochs=2)
    metrics = train(cfg)
    assert "adv/pgd/eps0.3/robust_acc" in metrics
    with open(Path(cfg.paths.output_dir) / "csv" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    epochs = {row["epoch"] for row in rows if row.get("adv/pgd/eps0.3/robust_acc")}
    assert epochs == {"1"}


def _train_py(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "train.py", *overrides],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _adv_metrics(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "csv" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for row in rows for k, v in row.items() if k.startswith("adv/") and v}


# untrained weights (lr 0: both runs validate the same seeded init) and deterministic attacks
SAME_MODEL_RUN = (
    "data.batch_size=8", "data.eval_batch_size=8", "data.val_size=16", "trainer.max_epochs=1",
    "trainer.limit_train_batches=2", "test=false", "model.optimizer.lr=0", "model.val_attack.steps=1",
    "callbacks.adversarial_eval.num_samples=13",
    "callbacks.adversarial_eval.suite.attacks.pgd.attack.random_start=false",
    "callbacks.adversarial_eval.suite.attacks.pgd.attack.steps=3",
    "callbacks.adversarial_eval.suite.attacks.apgd.attack.steps=3",
    "logger=csv", "extras.print_config=false", "callbacks.rich_progress_bar=null",
)  # fmt: skip


@pytest.mark.slow  # two train.py processes each way: ~90 s on 2 cores
def test_ddp_sim_numbers_equal_single_process_numbers(mnist_dir: Path, tmp_path: Path) -> None:
    runs = {}
    for trainer in ("cpu", "ddp_sim"):
        run_dir = tmp_path / trainer
        result = _train_py(
            f"hydra.run.dir={run_dir}", f"data.data_dir={mnist_dir}", f"trainer={trainer}",
            *SAME_MODEL_RUN,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        runs[trainer] = _adv_metrics(run_dir)
    single, ddp = runs["cpu"], runs["ddp_sim"]
    accuracies = [k for k in single if k.endswith(("robust_acc", "success_rate", "clean_acc"))]
    assert len(accuracies) == 15  # (2 attacks x 3 eps + APGD x 1 eps) x 2 + clean
    for key in accuracies:
        assert ddp[key] == single[key], key
    for key in (k for k in single if "_mean" in k or "_max" in k):
        assert ddp[key] == pytest.approx(single[key], rel=1e-5), key


def test_callback_does_not_change_the_training_run(compose_train) -> None:
    """Its attacks draw random starts from a forked RNG: training is the same with or without it."""
    runs = {}
    for name, overrides in (("with", []), ("without", ["callbacks.adversarial_eval=null"])):
        cfg = compose_train("logger=none", "test=false", "seed=3", *overrides)
        if cfg.callbacks.get("adversarial_eval"):
            _tiny_fit(cfg, epochs=2)
        with open_dict(cfg):
            cfg.trainer.max_epochs, cfg.trainer.limit_train_batches = 2, 2
        runs[name] = train(cfg)
    assert "adv/pgd/eps0.3/robust_acc" in runs["with"]
    assert "adv/pgd/eps0.3/robust_acc" not in runs["without"]
    for metric in ("train/loss", "val/loss", "val/robust_acc_pgd2"):
        assert runs["with"][metric] == runs["without"][metric], metric
