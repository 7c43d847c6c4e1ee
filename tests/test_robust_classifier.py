"""RobustClassifier: methods, one training step, checkpoint round trip, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from advlab.errors import ConfigError
from advlab.models import RobustClassifier
from advlab.models.objectives import OBJECTIVES

NET = {"_target_": "advlab.nets.SmallCNN", "channels": [8, 16], "hidden": 32}
PGD = {"_target_": "torchattacks.PGD", "eps": 0.3, "alpha": 0.1, "steps": 3, "random_start": True}
TPGD = {"_target_": "torchattacks.TPGD", "eps": 0.3, "alpha": 0.1, "steps": 3}
FFGSM = {"_target_": "torchattacks.FFGSM", "eps": 0.3, "alpha": 0.375}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01}
TRAIN_ATTACK = {"clean": None, "pgd": PGD, "fgsm_rs": FFGSM, "trades": TPGD}


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
        ConfigError, match=r"model.method='madry' is not one of clean, pgd, fgsm_rs, trades"
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
