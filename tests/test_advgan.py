"""AdvGAN: budget by construction, frozen target, learning, checkpoints, the attack adapter, errors."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch import Callback, Trainer
from omegaconf import OmegaConf, open_dict
from torch.utils.data import DataLoader, TensorDataset

from advlab.attacks import build_attack, check_within_budget
from advlab.attacks.advgan import AdvGANAttack
from advlab.data import MNISTDataModule
from advlab.errors import ConfigError
from advlab.eval import evaluate
from advlab.evaluation.measure import attack_batch
from advlab.evaluation.runner import run_attack
from advlab.evaluation.tally import JudgeTally
from advlab.models import AdvGAN, RobustClassifier
from advlab.models.advgan import cw_margin_loss
from advlab.nets import PerturbationGenerator
from advlab.nets.perturbation import perturb_images
from advlab.train import run, train
from tests.conftest import REPO_ROOT, experiment_options

MNIST_SHAPE = (1, 28, 28)
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01, "betas": [0.5, 0.999]}
# BatchNorm and dropout: a target left in training mode would change its statistics and logits
TINY_NET = {"_target_": "torch.nn.Sequential", "_args_": [
    {"_target_": "advlab.nets.Normalize", "mean": [0.1307], "std": [0.3081]},
    {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3},
    {"_target_": "torch.nn.BatchNorm2d", "num_features": 4},
    {"_target_": "torch.nn.ReLU"},
    {"_target_": "torch.nn.MaxPool2d", "kernel_size": 2},
    {"_target_": "torch.nn.Conv2d", "in_channels": 4, "out_channels": 8, "kernel_size": 3},
    {"_target_": "torch.nn.ReLU"},
    {"_target_": "torch.nn.MaxPool2d", "kernel_size": 2},
    {"_target_": "torch.nn.Flatten"},
    {"_target_": "torch.nn.Dropout", "p": 0.2},
    {"_target_": "torch.nn.Linear", "in_features": 8 * 5 * 5, "out_features": 10},
]}  # fmt: skip


def toy_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One fixed random pattern per class plus noise: a learnable 10-class problem of 28x28 images."""
    patterns = torch.rand(10, *MNIST_SHAPE, generator=torch.Generator().manual_seed(0))
    noise = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=noise)
    return 0.6 * patterns[labels] + 0.4 * torch.rand(n, *MNIST_SHAPE, generator=noise), labels


def save_classifier(path: Path, seed: int) -> Path:
    """A `model=robust` checkpoint of a tiny CNN (BatchNorm and dropout: train/eval differ)."""
    torch.manual_seed(seed)
    model = RobustClassifier(
        net=TINY_NET, method={"_target_": "advlab.methods.Clean"}, optimizer=ADAM, val_attack=None
    )
    loader = DataLoader(TensorDataset(*toy_digits(256, seed)), batch_size=32, shuffle=True)
    trainer = Trainer(
        accelerator="cpu", max_epochs=5, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=path.parent,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def mnist_target_ckpt(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A tiny classifier of the tiny MNIST files (end-to-end runs need one that gets them right)."""
    path = tmp_path_factory.mktemp("mnist_target") / "target.ckpt"
    torch.manual_seed(0)
    model = RobustClassifier(
        net=TINY_NET, method={"_target_": "advlab.methods.Clean"}, optimizer=ADAM, val_attack=None
    )
    datamodule = MNISTDataModule(data_dir=str(mnist_dir), batch_size=16, val_size=16,
                                 download=False)  # fmt: skip
    trainer = Trainer(
        accelerator="cpu", max_epochs=5, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=path.parent,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def target_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("target") / "target.ckpt", seed=0)


@pytest.fixture(scope="module")
def other_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("other") / "other.ckpt", seed=1)


def make_advgan(target_ckpt: Path, **kwargs) -> AdvGAN:
    torch.manual_seed(0)
    args = {
        "generator": {"_target_": "advlab.nets.PerturbationGenerator", "width": 4, "res_blocks": 1},
        "discriminator": {"_target_": "advlab.nets.DCGANDiscriminator", "width": 4},
        "optimizer_g": ADAM,
        "optimizer_d": ADAM,
        "target_ckpt": None if target_ckpt is None else str(target_ckpt),
        "image_shape": MNIST_SHAPE,
        **kwargs,
    }
    return AdvGAN(**args)


def fixed_batch(model: AdvGAN, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Toy digits labelled with the target's own predictions: all start correctly classified."""
    x, _ = toy_digits(n, seed=100)
    with torch.no_grad():
        return x, model.target(x).argmax(dim=1)


def fit(model: AdvGAN, batch, tmp_path: Path, steps: int = 3, callbacks=(), val: bool = False):
    loader = DataLoader(TensorDataset(*batch), batch_size=len(batch[1]))
    trainer = Trainer(
        accelerator="cpu", max_epochs=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        callbacks=list(callbacks), limit_val_batches=1 if val else 0, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=loader, val_dataloaders=loader if val else None)
    return trainer


def success_rate(model: AdvGAN, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model.target(model.perturb(x)).argmax(dim=1) != y).float().mean().item()


# ---- the perturbation ---------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.3, 8 / 255])
def test_perturbation_is_within_eps_and_the_unit_box_even_when_saturated(target_ckpt, eps) -> None:
    model = make_advgan(target_ckpt, eps=eps)
    x = torch.cat([torch.zeros(2, *MNIST_SHAPE), torch.ones(2, *MNIST_SHAPE),
                   torch.rand(4, *MNIST_SHAPE)])  # fmt: skip
    with torch.no_grad():  # huge weights: tanh saturates at +-1 everywhere
        for param in model.generator.parameters():
            param.mul_(1000.0)
    for x_adv in (model.perturb(x), model(x)):
        check_within_budget(x, x_adv, eps, "Linf", tol=1e-6)
        assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (model.perturb(x) - x)[4:].abs().amax(dim=(1, 2, 3))
    assert torch.all(delta > 0.9 * eps)  # the bound is reached, not merely respected
    assert model.generator.training  # perturb restores the generator's mode


def test_cw_margin_loss_untargeted_and_targeted() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    labels = torch.tensor([0, 1])
    # untargeted: Z_y - max other = 2 and -3 (clamped at -kappa = -1)
    assert cw_margin_loss(logits, labels, targeted=False, kappa=1.0).item() == pytest.approx(0.5)
    # targeted at class 2: max other - Z_t = 3 and -3 (clamped at 0)
    target = torch.tensor([2, 2])
    assert cw_margin_loss(logits, target, targeted=True).item() == pytest.approx(1.5)


# ---- training ------------------------------------------------------------------------------------
class _TargetStaysInEvalMode(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        assert not any(m.training for m in pl_module.target.modules())
        assert all(p.grad is None for p in pl_module.target.parameters())


def test_training_never_changes_the_target_and_moves_both_networks(target_ckpt, tmp_path) -> None:
    model = make_advgan(target_ckpt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = fit(model, fixed_batch(model), tmp_path, steps=3,
                  callbacks=[_TargetStaysInEvalMode()])  # fmt: skip
    after = model.state_dict()
    assert trainer.global_step == 6  # D and G steps through Lightning's optimizer wrappers
    target_keys = [k for k in before if k.startswith("target.")]
    assert any("running_mean" in k for k in target_keys)  # BatchNorm statistics are checked too
    assert all(torch.equal(before[k], after[k]) for k in target_keys)
    for prefix in ("generator.", "discriminator."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))
    assert not any(p.requires_grad for p in model.target.parameters())
    optimized = {id(p) for opt in trainer.optimizers for g in opt.param_groups for p in g["params"]}
    assert optimized.isdisjoint(id(p) for p in model.target.parameters())


def test_a_few_steps_raise_the_success_rate_on_a_fixed_batch(target_ckpt, tmp_path) -> None:
    model = make_advgan(target_ckpt, eps=0.1, gan_weight=0.0, hinge_weight=0.0)
    x, y = fixed_batch(model)
    before = success_rate(model, x, y)
    fit(model, (x, y), tmp_path, steps=15)
    after = success_rate(model, x, y)
    assert after >= before + 0.3, (before, after)


def test_targeted_attack_pushes_images_to_the_target_class(target_ckpt, tmp_path) -> None:
    model = make_advgan(target_ckpt, eps=0.3, target_class=3, gan_weight=0.0)
    x, y = fixed_batch(model)
    with torch.no_grad():
        before = (model.target(model.perturb(x)).argmax(1) == 3).float().mean().item()
    trainer = fit(model, (x, y), tmp_path, steps=15, val=True)
    with torch.no_grad():
        after = (model.target(model.perturb(x)).argmax(1) == 3).float().mean().item()
    assert after >= before + 0.3, (before, after)
    assert 0.0 <= trainer.callback_metrics["val/targeted_success_rate"] <= 1.0


def test_validation_logs_success_norms_and_transfer(target_ckpt, other_ckpt, tmp_path) -> None:
    model = make_advgan(target_ckpt, transfer_ckpts={"seed1": str(other_ckpt)})
    trainer = fit(model, fixed_batch(model), tmp_path, steps=1, val=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for key in ("val/success_rate", "val/robust_acc", "val/clean_acc", "val/linf_max",
                "val/l2_mean", "val/seed1/success_rate", "val/success_rate_best"):  # fmt: skip
        assert math.isfinite(metrics[key]), key
    assert metrics["val/clean_acc"] == 1.0  # labels are the target's own predictions
    assert metrics["val/linf_max"] <= model.hparams.eps + 1e-6
    assert "transfer" not in dict(model.named_children())  # evaluation-only: not in checkpoints


# ---- checkpoints and the attack adapter ---------------------------------------------------------
@pytest.fixture(scope="module")
def advgan_ckpt(tmp_path_factory: pytest.TempPathFactory, target_ckpt: Path) -> Path:
    """A trained AdvGAN whose target file is gone: reloading must not need it."""
    folder = tmp_path_factory.mktemp("advgan")
    target_copy = folder / "target_copy.ckpt"
    target_copy.write_bytes(target_ckpt.read_bytes())
    model = make_advgan(target_copy)
    trainer = fit(model, fixed_batch(model), folder, steps=2)
    trainer.save_checkpoint(folder / "advgan.ckpt")
    target_copy.unlink()
    return folder / "advgan.ckpt"


def test_load_from_checkpoint_alone_rebuilds_generator_and_target(advgan_ckpt) -> None:
    model = AdvGAN.load_from_checkpoint(advgan_ckpt)
    assert not Path(model.hparams.target_ckpt).exists()
    x = torch.rand(5, *MNIST_SHAPE, generator=torch.Generator().manual_seed(3))
    x_adv = model.perturb(x)
    check_within_budget(x, x_adv, 0.3, "Linf", tol=1e-6)
    checkpoint = torch.load(advgan_ckpt, weights_only=True)
    again = AdvGAN.load_from_checkpoint(advgan_ckpt)
    assert torch.equal(x_adv, again.perturb(x))
    target_weights = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("target.")}
    assert target_weights and all(
        torch.equal(v, model.state_dict()[k]) for k, v in target_weights.items()
    )


def attack_config(**overrides) -> dict:
    """configs/attack/advgan.yaml at MNIST's budget (the data config fills in eps in a run)."""
    cfg = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "configs" / "attack" / "advgan.yaml"))
    return {**cfg, "eps": 0.3, **overrides}


def test_attack_config_builds_an_attack_equal_to_perturb(advgan_ckpt, other_ckpt) -> None:
    classifier = RobustClassifier.load_from_checkpoint(other_ckpt).eval()
    attack = build_attack(attack_config(ckpt_path=str(advgan_ckpt)), classifier)
    assert isinstance(attack, AdvGANAttack)
    x = torch.rand(6, *MNIST_SHAPE, generator=torch.Generator().manual_seed(4))
    y = torch.zeros(6, dtype=torch.long)
    x_adv = attack(x, y)
    assert torch.equal(x_adv, AdvGAN.load_from_checkpoint(advgan_ckpt).perturb(x))
    smaller = build_attack(attack_config(ckpt_path=str(advgan_ckpt), eps=0.1), classifier)
    check_within_budget(x, smaller(x, y), 0.1, "Linf", tol=1e-6)
    assert (smaller(x, y) - x).abs().max() > 0.09


def test_attack_builds_only_the_generator_and_checks_its_target(advgan_ckpt, tmp_path) -> None:
    net = torch.nn.Linear(1, 1)  # the attacked model: only its device matters
    attack = AdvGANAttack(net, ckpt_path=str(advgan_ckpt), eps=0.3)
    assert isinstance(attack.generator, PerturbationGenerator) and not attack.generator.training
    assert attack.trained_eps == 0.3
    assert not any(isinstance(v, torch.nn.Module) for k, v in vars(attack).items()
                   if k != "generator")  # fmt: skip
    # a file naming a generator that would run code when built is refused before building it
    checkpoint = torch.load(advgan_ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["generator"] = {
        "_target_": "torch.hub.load", "repo_or_dir": str(tmp_path), "model": "x",
        "source": "local", "trust_repo": True,
    }  # fmt: skip
    torch.save(checkpoint, tmp_path / "hub.ckpt")
    with pytest.raises(ConfigError, match=r"names _target_ torch.hub.load.*trusted_targets="):
        AdvGANAttack(net, ckpt_path=str(tmp_path / "hub.ckpt"))


def test_the_attack_package_does_not_import_the_models() -> None:
    """attacks/ sits below models/: loading the attack must not import a LightningModule."""
    code = (
        "import sys, advlab.attacks.advgan, advlab.nets.perturbation\n"
        "assert 'advlab.models' not in sys.modules, sorted(sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_perturbation_formula_is_shared_by_the_module_and_the_attack(advgan_ckpt) -> None:
    model = AdvGAN.load_from_checkpoint(advgan_ckpt)
    x = torch.rand(3, *MNIST_SHAPE, generator=torch.Generator().manual_seed(6))
    generator = model.generator.eval()
    with torch.no_grad():
        expected = (x + 0.3 * torch.tanh(generator(x * 2 - 1))).clamp(0, 1)
    assert torch.equal(perturb_images(generator, x, 0.3), expected)
    assert torch.equal(model.perturb(x), expected)


def test_advgan_and_pgd_run_through_the_same_suite_runner(advgan_ckpt, other_ckpt) -> None:
    classifier = RobustClassifier.load_from_checkpoint(other_ckpt).eval()
    x = torch.rand(12, *MNIST_SHAPE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = classifier(x).argmax(dim=1)
    batches = list(zip(x.split(6), y.split(6), strict=True))
    pgd = {"_target_": "torchattacks.PGD", "norm": "Linf", "eps": 0.3, "alpha": 0.1, "steps": 2}
    for cfg in (attack_config(ckpt_path=str(advgan_ckpt)), pgd):
        for eps in (0.0, 0.1, 0.3):
            stats = run_attack(classifier, cfg, eps, batches)
            assert stats.count == 12 and stats.clean_acc == 1.0
            assert stats.linf_max <= eps + 1e-6
            if eps == 0.0:
                assert stats.robust_acc == 1.0


def test_eval_report_scores_advgan_next_to_pgd(
    advgan_ckpt, mnist_target_ckpt, mnist_dir, tmp_path
) -> None:
    from tests.conftest import TINY_EVAL

    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../configs"):
        cfg = compose("eval", return_hydra_config=True, overrides=[
            *TINY_EVAL, "suite=advgan", f"ckpt_path={mnist_target_ckpt}", "logger=none",
            f"suite.attacks.advgan.attack.ckpt_path={advgan_ckpt}",
        ])  # fmt: skip
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.data.data_dir = str(mnist_dir)
        cfg.data.download = False
        cfg.data.val_size = 16
        del cfg.hydra
    GlobalHydra.instance().clear()
    report = evaluate(cfg)
    runs = {(r["attack"], r["eps"]): r for r in report["results"]}
    assert {("advgan", 0.075), ("advgan", 0.15), ("advgan", 0.3), ("pgd", 0.3)} <= set(runs)
    assert runs[("advgan", 0.3)]["label"] == "AdvGANAttack"
    assert runs[("advgan", 0.075)]["linf_max"] <= 0.075 + 1e-6


# ---- bad input -----------------------------------------------------------------------------------
def test_missing_or_wrong_target_is_one_clear_error(target_ckpt, advgan_ckpt, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"^model.target_ckpt is required: a model=robust"):
        make_advgan(None)
    with pytest.raises(ConfigError, match=r"^model.target_ckpt=.*missing.ckpt: no file there"):
        make_advgan(tmp_path / "missing.ckpt")
    with pytest.raises(
        ConfigError,
        match=r"^model.target_ckpt=.*advgan.ckpt is not a RobustClassifier checkpoint "
        r"\(it holds discriminator, generator, target\)",
    ):
        make_advgan(advgan_ckpt)
    (tmp_path / "cut.ckpt").write_bytes(target_ckpt.read_bytes()[:200])
    with pytest.raises(
        ConfigError, match=r"cut.ckpt is not a PyTorch checkpoint \(truncated or corrupt"
    ):
        make_advgan(tmp_path / "cut.ckpt")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"eps": 1.5}, r"model.eps=1.5 is outside \(0, 1\]"),
     ({"target_class": 10}, r"model.target_class=10 but the target classifier has 10 classes"),
     ({"target_class": -1}, r"model.target_class=-1 must be null \(untargeted\) or a class"),
     ({"hinge_weight": -1.0}, r"model.hinge_weight must be >= 0"),
     ({"loss": "wgan"}, r"model.loss='wgan' is not one of bce, hinge"),
     ({"transfer_ckpts": "a.ckpt"}, r"model.transfer_ckpts=a.ckpt must be a list"),
     ({"image_shape": (3, 32, 32)}, r"model.target_ckpt \(Sequential\) does not take images of "
                                    r"shape \(3, 32, 32\)")],
)  # fmt: skip
def test_bad_options_are_refused(target_ckpt, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_advgan(target_ckpt, **kwargs)


def test_attack_with_a_classifier_checkpoint_is_one_clear_error(target_ckpt) -> None:
    net = RobustClassifier.load_from_checkpoint(target_ckpt).net
    with pytest.raises(ConfigError, match=r"^attack.ckpt_path is required \(the attack config"):
        build_attack(attack_config(), net)  # ckpt_path: ??? in the config
    with pytest.raises(
        ConfigError,
        match=r"^attack.ckpt_path=.*target.ckpt is not an AdvGAN checkpoint \(it holds net\)",
    ):
        build_attack(attack_config(ckpt_path=str(target_ckpt)), net)
    with pytest.raises(ConfigError, match=r"^attack.norm=L2: AdvGAN's generator bounds .* Linf"):
        build_attack(attack_config(ckpt_path=str(target_ckpt), norm="L2", eps=2.0), net)


def test_missing_transfer_checkpoint_fails_before_training(compose_train, target_ckpt) -> None:
    cfg = compose_train(
        "model=advgan", "logger=none", f"model.target_ckpt={target_ckpt}",
        "model.transfer_ckpts=[missing.ckpt]",
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"model.transfer_ckpts.transfer_0=missing.ckpt: no file"):
        train(cfg)


def test_train_without_a_target_says_so_in_one_line(compose_train, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(compose_train("model=advgan", "logger=none"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "advlab: error: model.target_ckpt is required: a model=robust checkpoint, e.g. "
        "logs/train/runs/<run>/checkpoints/last.ckpt of experiment=mnist_clean\n"
    )


# ---- end to end ----------------------------------------------------------------------------------
@pytest.mark.parametrize("experiment", experiment_options("advgan"))
def test_experiment_trains_validates_and_tests(
    compose_train, experiment: str, mnist_target_ckpt, tmp_path
) -> None:
    cfg = compose_train(  # the target as its own "transfer" classifier: the numbers must agree
        f"experiment={experiment}", "logger=csv", f"model.target_ckpt={mnist_target_ckpt}",
        f"model.transfer_ckpts=[{mnist_target_ckpt}]",
    )  # fmt: skip
    assert cfg.callbacks.model_checkpoint.monitor == "val/success_rate"
    assert cfg.optimized_metric == "val/success_rate_best"
    with open_dict(cfg):
        cfg.trainer.max_epochs = 1
        cfg.trainer.limit_train_batches = 2
        cfg.trainer.limit_val_batches = 1
        cfg.trainer.limit_test_batches = 1
        cfg.trainer.enable_model_summary = False
        cfg.model.generator.width = 4
    metrics = train(cfg)
    for key in ("val/success_rate", "test/success_rate", "test/transfer_0/success_rate",
                "test/linf_max", "train/loss_adv_epoch"):  # fmt: skip
        assert math.isfinite(metrics[key]), key
    assert metrics["test/linf_max"] <= 0.3 + 1e-6
    assert metrics["test/transfer_0/success_rate"] == metrics["test/success_rate"]
    assert (tmp_path / "adversarial_examples" / "epoch_000.png").is_file()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch_000.ckpt",
        "last.ckpt",
    ]
    reloaded = AdvGAN.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert reloaded.hparams.image_shape == list(MNIST_SHAPE)


@pytest.mark.slow  # two processes start, each imports torch and Lightning: ~40 s on 2 busy cores
def test_train_py_trains_advgan_on_two_cpu_processes(
    mnist_dir: Path, target_ckpt: Path, tmp_path: Path
) -> None:
    from tests.test_train import _run_train_py

    run_dir = tmp_path / "ddp"
    result = _run_train_py(
        f"hydra.run.dir={run_dir}", f"data.data_dir={mnist_dir}", "model=advgan", "trainer=ddp_sim",
        f"model.target_ckpt={target_ckpt}", "data.batch_size=8", "data.eval_batch_size=8",
        "data.val_size=16", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "logger=csv",
        "extras.print_config=false", "model.generator.width=4", "model.discriminator.width=8",
    )  # fmt: skip
    output = result.stderr + result.stdout
    assert result.returncode == 0, output[-3000:]
    assert "MEMBER: 2/2" in output and "ddp_find_unused_parameters_true" in output
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4  # 2 batches x (D step + G step)
    assert (run_dir / "adversarial_examples" / "epoch_000.png").is_file()


def test_tally_of_two_shards_equals_the_tally_of_the_whole_batch(target_ckpt) -> None:
    model = make_advgan(target_ckpt, target_class=3)
    x, y = toy_digits(20, seed=7)
    attack = lambda images, _: model.perturb(images)  # noqa: E731

    def outcome(sl: slice):
        return attack_batch(model.target, attack, x[sl], y[sl], 0.3, "Linf")

    whole, first, second = (JudgeTally(["target"], target_class=3) for _ in range(3))
    whole.add("target", outcome(slice(None)))
    first.add("target", outcome(slice(0, 13)))
    second.add("target", outcome(slice(13, None)))
    other_rank = iter([second.stats["target"].to_tensor(), second.targeted["target"]])
    sharded = first.reduce(lambda t: torch.stack([t, next(other_rank)]), "cpu")["target"]
    single = whole.reduce(lambda t: t.unsqueeze(0), "cpu")["target"]
    for key in ("success_rate", "robust_acc", "clean_acc", "l2_mean", "linf_max",
                "targeted_success_rate"):  # fmt: skip
        assert sharded[key] == pytest.approx(single[key]), key
    assert sharded["count"] == 20


def test_advgan_vs_pgd_script_scores_both_on_every_classifier(
    advgan_ckpt, mnist_target_ckpt, target_ckpt, mnist_dir, tmp_path
) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "advgan_vs_pgd", REPO_ROOT / "scripts" / "advgan_vs_pgd.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    pgd = tmp_path / "pgd2.yaml"
    pgd.write_text("_target_: torchattacks.PGD\nnorm: Linf\neps: 0.3\nalpha: 0.1\nsteps: 2\n")
    results = script.main([
        "--advgan", str(advgan_ckpt), "--classifier", f"mnist={mnist_target_ckpt}",
        "--classifier", f"toy={target_ckpt}", "--data-dir", str(mnist_dir), "--n", "16",
        "--batch-size", "8", "--pgd", str(pgd), "--json", str(tmp_path / "out.json"),
    ])  # fmt: skip
    assert set(results) == {"mnist", "toy"}
    for row in results.values():
        assert row["advgan"]["count"] == row["pgd"]["count"] == 16
        assert row["advgan"]["linf_max"] <= 0.3 + 1e-6 and row["speedup"] > 0
    assert (tmp_path / "out.json").is_file()
    default_pgd = REPO_ROOT / "configs" / "attack" / "pgd40.yaml"  # the budget is the data's
    assert script.attack_config(default_pgd, "cifar10")["eps"] == pytest.approx(8 / 255)
    with pytest.raises(SystemExit, match="is not NAME=PATH"):
        script.main(["--advgan", str(advgan_ckpt), "--classifier", "no-name"])


def test_perturbation_stays_within_eps_under_bf16_autocast() -> None:
    """trainer.precision=bf16-mixed on a CPU: a saturated tanh must still give at most eps
    (in bfloat16, 0.3 * 1.0 is 0.30078)."""
    from advlab.nets.perturbation import perturb_images

    saturated = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        saturated.weight.fill_(0.0)
        saturated.bias.fill_(50.0)  # tanh(50) = 1
    x = torch.full((2, 1, 28, 28), 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = perturb_images(saturated, x, 0.3)
    assert (x_adv - x).abs().max().item() == pytest.approx(0.3, abs=1e-7)
    check_within_budget(x, x_adv, 0.3, "Linf")
