"""A run preempted by SIGTERM mid-epoch and resumed ends exactly like an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from advlab.train import train

STEPS_PER_EPOCH = 4


def short_run(cfg, epochs: int = 2):
    with open_dict(cfg):
        cfg.trainer.max_epochs = epochs
        cfg.trainer.limit_train_batches = STEPS_PER_EPOCH
        cfg.trainer.limit_val_batches = 1
        cfg.trainer.num_sanity_val_steps = 0
        cfg.trainer.enable_model_summary = False
        cfg.data.crop_padding = 2  # random augmentation and PGD random starts both draw numbers
        cfg.callbacks.adversarial_eval = None
    return cfg


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return checkpoint["state_dict"]


@pytest.mark.parametrize("kill_at_step", [2, STEPS_PER_EPOCH])  # mid-epoch, end of epoch 0
def test_sigterm_then_resume_equals_uninterrupted_run(
    compose_train, tmp_path: Path, kill_at_step: int
) -> None:
    reference = short_run(compose_train("logger=none", "test=false", "trainer.max_epochs=2"))
    with open_dict(reference):
        reference.paths.output_dir = str(tmp_path / "reference")
    train(reference)

    killed = short_run(
        compose_train(
            "logger=none",
            "test=false",
            "+callbacks.sigterm._target_=tests.preemption_helpers.SigtermAtStep",
            f"+callbacks.sigterm.step={kill_at_step}",
        )
    )
    with open_dict(killed):
        killed.paths.output_dir = str(tmp_path / "preempted")
    with pytest.raises(SystemExit):  # Lightning's SIGTERMException
        train(killed)
    saved = torch.load(tmp_path / "preempted" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == kill_at_step

    resumed = short_run(compose_train("logger=none", "test=false", "ckpt_path=last"))
    with open_dict(resumed):
        resumed.paths.output_dir = str(tmp_path / "preempted")
    train(resumed)

    expected, got = final_weights(tmp_path / "reference"), final_weights(tmp_path / "preempted")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
