"""Free adversarial training (method=free, attack/free): replays, the carried perturbation,
the LR schedule's step count, and the settings it refuses."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader, TensorDataset

from advlab.attacks import build_attack, check_within_budget
from advlab.attacks.free import FreePerturbation
from advlab.errors import ConfigError
from advlab.models import RobustClassifier
from advlab.nets import SmallCNN
from tests.builders import FREE, ONE_CYCLE, PGD, make_classifier


def fixed_data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 28, 28, generator=generator)
    return x, torch.randint(0, 10, (n,), generator=generator)


def free_model(replays: int = 4, **kwargs) -> RobustClassifier:
    return make_classifier("free", {"replays": replays}, **kwargs)


def fit(model: RobustClassifier, epochs: int, batch_size: int = 8) -> Trainer:
    x, y = fixed_data()
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    trainer = Trainer(max_epochs=epochs, accelerator="cpu", logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(model, loader)
    return trainer


def pgd_loss(model: RobustClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    torch.manual_seed(3)  # the same random start before and after training
    x_adv = build_attack(PGD, model.net)(x, y)
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(x_adv), y).item()


def test_perturbation_starts_at_zero_then_moves_by_alpha_inside_the_ball() -> None:
    net = SmallCNN(channels=(8, 16), hidden=32)
    attack = build_attack(FREE, net, where="model.method.attack", training=True)
    assert isinstance(attack, FreePerturbation)
    x, y = fixed_data(6)
    first = attack(x, y)
    assert torch.equal(first, x)  # nothing has moved it yet
    grad = torch.randn_like(x)
    attack.step(x, first, grad)
    second = attack(x, y)
    expected = (x + 0.15 * grad.sign()).clamp(0, 1)
    torch.testing.assert_close(second, expected)
    for _ in range(4):  # three more steps in the same direction reach the ball's edge
        attack.step(x, attack(x, y), grad)
    check_within_budget(x, attack(x, y), 0.3)
    interior = (x > 0.31) & (x < 0.69)  # pixels the [0, 1] box does not clip
    assert torch.allclose((attack(x, y) - x)[interior].abs(), torch.tensor(0.3), atol=1e-6)
    other = torch.rand_like(x)  # the next batch starts from the carried perturbation
    check_within_budget(other, attack(other, y), 0.3)
    assert (attack(other, y) != other).any()


@pytest.mark.parametrize("where", ["attack", "model.val_attack", "callbacks.adversarial_eval"])
def test_free_perturbation_cannot_measure_robust_accuracy(where: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"{where}: .*FreePerturbation is a training attack only"
    ):
        build_attack(FREE, SmallCNN(channels=(8, 16), hidden=32), where=where)


def test_free_training_replays_every_batch_and_lowers_the_adversarial_loss() -> None:
    model = free_model(replays=3)
    x, y = fixed_data()
    before = pgd_loss(model, x, y)
    trainer = fit(model, epochs=2)  # 4 batches of 8
    assert trainer.global_step == 2 * 4 * 3  # one optimizer step per replay
    after = pgd_loss(model, x, y)
    assert after < before - 0.1, (before, after)
    carried = model.method.attack(model.net).delta
    assert carried.shape == (8, 1, 28, 28) and carried.abs().max().item() > 0.1
    assert carried.abs().max().item() <= 0.3 + 1e-6


def test_one_cycle_schedule_counts_replays() -> None:
    scheduler = ONE_CYCLE
    model = free_model(replays=4, scheduler=scheduler)

    class _Trainer:
        estimated_stepping_batches = 50
        max_steps = -1

    model.trainer = _Trainer()  # type: ignore[assignment]
    assert model.configure_optimizers()["lr_scheduler"]["scheduler"].total_steps == 200


def test_per_epoch_schedule_steps_once_per_epoch() -> None:
    scheduler = {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True,
                 "step_size": 1, "gamma": 0.5}  # fmt: skip
    model = free_model(replays=2, scheduler=scheduler, scheduler_interval="epoch")
    fit(model, epochs=3)
    assert model.optimizers().param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**3)


class _StopAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer: Trainer, pl_module: RobustClassifier) -> None:
        trainer.should_stop = True  # an interrupted 2-epoch run


def test_resume_continues_the_replay_count_and_the_schedule(tmp_path) -> None:
    scheduler = ONE_CYCLE
    x, y = fixed_data()
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    settings = {"max_epochs": 2, "accelerator": "cpu", "logger": False,
                "enable_checkpointing": False, "enable_progress_bar": False,
                "enable_model_summary": False, "limit_val_batches": 0}  # fmt: skip
    first = Trainer(callbacks=[_StopAfterFirstEpoch()], **settings)
    first.fit(free_model(replays=2, scheduler=scheduler), loader)
    assert first.global_step == 4 * 2
    first.save_checkpoint(tmp_path / "last.ckpt")
    model = free_model(replays=2, scheduler=scheduler)
    resumed = Trainer(**settings)
    # OneCycleLR raises if stepped past its total: resuming must neither restart nor overshoot it
    resumed.fit(model, loader, ckpt_path=tmp_path / "last.ckpt")
    assert resumed.global_step == 2 * 4 * 2
    one_cycle = model.lr_schedulers()
    assert one_cycle.last_epoch == one_cycle.total_steps == 16
    # the perturbation carries on from where the interrupted run left it
    assert "delta" in torch.load(tmp_path / "last.ckpt", weights_only=True)["method_state"]


@pytest.mark.parametrize(
    ("batches", "max_steps", "total"), [(50, 120, 120), (50, 121, 124), (1, 1, 4)]
)
def test_max_steps_caps_the_schedule_at_whole_batches_of_replays(
    batches: int, max_steps: int, total: int
) -> None:
    """The Trainer checks max_steps (optimizer steps) between batches, so a run stops after the
    replays of the batch that crosses it (fast_dev_run: max_steps 1, one batch of 4 replays)."""
    scheduler = ONE_CYCLE
    model = free_model(replays=4, scheduler=scheduler)

    class _Trainer:
        estimated_stepping_batches = batches  # Lightning: min(max_steps, batches)

    _Trainer.max_steps = max_steps
    model.trainer = _Trainer()  # type: ignore[assignment]
    assert model.configure_optimizers()["lr_scheduler"]["scheduler"].total_steps == total


def test_fast_dev_run_takes_one_batch_of_replays() -> None:
    scheduler = ONE_CYCLE
    model = free_model(replays=4, scheduler=scheduler)
    x, y = fixed_data()
    trainer = Trainer(fast_dev_run=True, accelerator="cpu", logger=False,
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=8))
    assert trainer.global_step == 4
