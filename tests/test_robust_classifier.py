"""RobustClassifier: methods, one training step, checkpoint round trip, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from advlab.data import MNISTDataModule
from advlab.errors import ConfigError
from advlab.models import RobustClassifier
from advlab.models.objectives import OBJECTIVES

NET = {"_target_": "advlab.nets.SmallCNN", "channels": [8, 16], "hidden": 32}
PGD = {"_target_": "torchattacks.PGD", "eps": 0.3, "alpha": 0.1, "steps": 3, "random_start": True}
TPGD = {"_target_": "torchattacks.TPGD", "eps": 0.3, "alpha": 0.1, "steps": 3}
FFGSM = {"_target_": "torchattacks.FFGSM", "eps": 0.3, "alpha": 0.375}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01}
NFGSM = {"_target_": "advlab.attacks.nfgsm.NFGSM", "eps": 0.3, "alpha": 0.3, "noise_scale": 2.0}
TRAIN_ATTACK = {"clean": None, "pgd": PGD, "fgsm_rs": FFGSM, "nfgsm": NFGSM, "trades": TPGD}


def make_model(method: str = "pgd", **kwargs) -> RobustClassifier:
    torch.manual_seed(0)
    args = {
        "net": NET,
        "method": method,
        "train_attack": TRAIN_ATTACK[method],
        "optimizer": ADAM,
        **kwargs,
    }
    return RobustClassifier(**args)


def fixed_batch(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 28, 28, generator=generator), torch.randint(
        0, 10, (n,), generator=generator
    )


def adversarial_loss(model: RobustClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    torch.manual_seed(3)  # same random start before and after the step
    attack = model.attack("train")
    x_adv = attack(x, y) if attack is not None else x
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(x_adv), y).item()


@pytest.mark.parametrize("method", list(OBJECTIVES))
def test_training_steps_lower_the_loss_on_a_fixed_batch(method: str) -> None:
    model = make_model(method, val_attack=PGD)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = fixed_batch()
    losses = [adversarial_loss(model, x, y)]  # under the method's own attack (none for clean)
    for _ in range(5):
        loss, _ = model.objective(model.net, model.attack("train"), x, y, beta=6.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(adversarial_loss(model, x, y))
    assert losses[1] < losses[0], losses
    assert losses[-1] < losses[0] - 0.1, losses


def test_forward_takes_unit_images_and_returns_logits() -> None:
    model = make_model()
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 10)


def test_checkpoint_reload_gives_identical_logits(tmp_path: Path) -> None:
    model = make_model(val_attack=PGD, test_attack=PGD)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    trainer = Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0
    )
    trainer.strategy.connect(model)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    reloaded = RobustClassifier.load_from_checkpoint(path)
    x = torch.rand(7, 1, 28, 28)
    model.eval()
    reloaded.eval()
    assert torch.equal(model(x), reloaded(x))
    assert reloaded.hparams.method == "pgd"
    assert reloaded.hparams.test_attack["steps"] == 3


def test_unknown_method_is_refused() -> None:
    with pytest.raises(
        ConfigError,
        match=r"model.method='madry' is not one of clean, pgd, fgsm_rs, nfgsm, trades, free",
    ):
        RobustClassifier(net=NET, method="madry", train_attack=PGD, optimizer=ADAM)


def test_adversarial_method_without_attack_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model.method=pgd needs model.train_attack"):
        RobustClassifier(net=NET, method="pgd", train_attack=None, optimizer=ADAM)


def test_bad_epsilon_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError, match=r"model.val_attack.eps=8 is outside \(0, 1\]"):
        RobustClassifier(net=NET, method="clean", val_attack={**PGD, "eps": 8}, optimizer=ADAM)


def test_one_cycle_scheduler_gets_total_steps(tmp_path: Path) -> None:
    scheduler = {
        "_target_": "torch.optim.lr_scheduler.OneCycleLR",
        "_partial_": True,
        "max_lr": 0.01,
    }
    model = make_model("clean", scheduler=scheduler)

    class _Trainer:
        estimated_stepping_batches = 123

    model.trainer = _Trainer()  # type: ignore[assignment]
    config = model.configure_optimizers()
    assert config["lr_scheduler"]["scheduler"].total_steps == 123
    assert config["lr_scheduler"]["interval"] == "step"


def test_channels_last_gives_the_same_logits() -> None:
    plain, fast = make_model(), make_model(channels_last=True)
    fast.configure_model()
    x, _ = fixed_batch(8)
    x_fast = fast._memory_format(x)
    assert x_fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(x_fast), plain(x), rtol=1e-5, atol=1e-5)


def _trained_on_tiny_digits(mnist_dir: Path) -> tuple[RobustClassifier, MNISTDataModule]:
    torch.manual_seed(0)
    model = make_model("clean", test_attack={**PGD, "eps": 0.02, "alpha": 0.005, "steps": 10})
    data = MNISTDataModule(str(mnist_dir), batch_size=16, val_size=16, download=False)
    Trainer(max_epochs=30, accelerator="cpu", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
            inference_mode=False).fit(model, data)  # fmt: skip
    return model, data


def test_bf16_mixed_precision_keeps_the_attack_as_strong_as_fp32(mnist_dir: Path) -> None:
    """Under bf16 autocast only the network's matmuls run in bf16: images, perturbations and the
    eps-ball projection stay fp32 and the loss is computed in fp32, so PGD loses no strength."""
    model, data = _trained_on_tiny_digits(mnist_dir)
    results = {}
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(5)
        trainer = Trainer(accelerator="cpu", precision=precision, logger=False,
                          enable_progress_bar=False, inference_mode=False)  # fmt: skip
        (results[precision],) = trainer.test(model, data, verbose=False)
    fp32, bf16 = results["32-true"], results["bf16-mixed"]
    assert fp32["test/acc"] > 0.8  # a model worth attacking
    assert 0.1 < fp32["test/robust_acc"] < fp32["test/acc"] - 0.3  # an attack that bites, not all
    assert abs(bf16["test/robust_acc"] - fp32["test/robust_acc"]) <= 0.07  # 3 of 48 digits
    assert abs(bf16["test/acc"] - fp32["test/acc"]) <= 0.05


@pytest.mark.parametrize(("fraction", "attacked"), [(1.0, 16), (0.25, 4), (0.3, 5)])
def test_adversarial_fraction_attacks_the_first_images_only(fraction: float, attacked: int) -> None:
    x, y = fixed_batch(16)
    model = make_model("pgd", adversarial_fraction=fraction)
    torch.manual_seed(4)
    loss = model.training_step((x, y), 0)
    torch.manual_seed(4)  # the same random start
    x_adv = model.attack("train")(x[:attacked], y[:attacked])
    mixed = torch.cat((x_adv, x[attacked:]))
    expected = torch.nn.functional.cross_entropy(model(mixed), y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert (mixed[:attacked] != x[:attacked]).any() and torch.equal(mixed[attacked:], x[attacked:])


@pytest.mark.parametrize(
    ("method", "fraction", "message"),
    [
        ("pgd", 0.0, r"model.adversarial_fraction must be in \(0, 1\], got 0.0"),
        ("fgsm_rs", 1.2, r"model.adversarial_fraction must be in \(0, 1\], got 1.2"),
        (
            "trades",
            0.5,
            r"model.adversarial_fraction applies to pgd, fgsm_rs and nfgsm, not trades",
        ),
        ("clean", 0.5, r"model.adversarial_fraction applies to pgd, fgsm_rs and nfgsm, not clean"),
    ],
)
def test_bad_adversarial_fraction_is_refused(method: str, fraction: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_model(method, adversarial_fraction=fraction)
