"""RobustClassifier: a method's training step, checkpoint round trip, schedules, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from advlab.data import MNISTDataModule
from advlab.errors import ConfigError
from advlab.models import RobustClassifier
from tests.builders import ADAM, NET, ONE_CYCLE, PGD, fixed_batch, make_classifier, method


def make_model(name: str = "pgd", **kwargs) -> RobustClassifier:
    return make_classifier(name, **kwargs)


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
    assert reloaded.hparams.method == method("pgd")
    assert type(reloaded.method).__name__ == "PGDAT"
    assert reloaded.hparams.test_attack["steps"] == 3


def test_a_class_that_is_no_method_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model.method._target_=torch.nn.Linear is not an "):
        RobustClassifier(net=NET, method={"_target_": "torch.nn.Linear"}, optimizer=ADAM)


def test_a_net_that_cannot_be_built_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"model.net: cannot build advlab.nets.SmallCNN: "):
        RobustClassifier(net={**NET, "channels": [8]}, method=method("clean"), optimizer=ADAM)


def test_bad_epsilon_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError, match=r"model.val_attack.eps=8 is outside \(0, 1\]"):
        make_model("clean", val_attack={**PGD, "eps": 8})


def test_one_cycle_scheduler_gets_total_steps(tmp_path: Path) -> None:
    model = make_model("clean", scheduler=ONE_CYCLE)

    class _Trainer:
        estimated_stepping_batches = 123
        max_steps = -1

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
    robust = "test/robust_acc_pgd"  # the attack has no declared name: its class names it
    assert 0.1 < fp32[robust] < fp32["test/acc"] - 0.3  # an attack that bites, not all
    assert abs(bf16[robust] - fp32[robust]) <= 0.07  # 3 of 48 digits
    assert abs(bf16["test/acc"] - fp32["test/acc"]) <= 0.05


def test_val_and_test_attacks_are_checked_against_their_budget() -> None:
    class Overreaching:
        """An attack that leaves its budget: robust accuracy must not be counted on it."""

        def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (x + 0.5).clamp(0, 1)

    model = make_model("clean", test_attack=PGD)
    model._attacks[f"test@{model.device}"] = Overreaching()
    x, y = fixed_batch(4)
    with pytest.raises(AssertionError, match=r"perturbation Linf norm .* exceeds eps 0.3"):
        model._robust_logits("test", x, y)


def test_method_state_travels_in_the_checkpoint() -> None:
    model = make_model("free")
    model.method.attack(model.net).delta = torch.full((2, 1, 28, 28), 0.1)
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    reloaded = make_model("free")
    reloaded.on_load_checkpoint(checkpoint)
    assert torch.equal(reloaded.method._pending_delta, torch.full((2, 1, 28, 28), 0.1))
