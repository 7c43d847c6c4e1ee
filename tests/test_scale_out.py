"""Multi-process runs on 2 CPU processes: same numbers as 1 process, sweeps, crashes, determinism."""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import pytest
import torch

from advlab.train import train
from tests.test_train import TINY_RUN, _run_train_py

# clean training, no augmentation, no attack in the training step: what DDP must not change
SAME_MATH = (
    "method=clean", "data.crop_padding=0", "data.batch_size=8", "data.eval_batch_size=8",
    "data.val_size=16", "trainer.max_epochs=2", "trainer.limit_train_batches=4",
    "trainer.num_sanity_val_steps=0", "logger=csv", "extras.print_config=false",
    "callbacks.adversarial_eval=null", "model.val_attack.steps=1", "model.test_attack.steps=1",
    "test=false",
)  # fmt: skip


def last_validation(run_dir: Path) -> dict[str, float]:
    rows = list(csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open()))
    row = [r for r in rows if r.get("val/loss")][-1]
    return {key: float(row[key]) for key in ("val/loss", "val/acc")}


def test_two_processes_match_one_process_with_the_same_global_batch(
    mnist_dir: Path, tmp_path: Path
) -> None:
    runs = {}
    for trainer in ("cpu", "ddp_sim"):
        run_dir = tmp_path / trainer
        result = _run_train_py(
            f"hydra.run.dir={run_dir}",
            f"data.data_dir={mnist_dir}",
            f"trainer={trainer}",
            *SAME_MATH,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs[trainer] = last_validation(run_dir)
    # Same batches (the union of the ranks' shards is the 1-process batch), gradients averaged by
    # all-reduce: only float summation order differs, ~1e-7 relative per step. After 8 steps the
    # validation loss agrees to 1e-4 and the accuracy on 16 digits exactly.
    assert runs["ddp_sim"]["val/loss"] == pytest.approx(runs["cpu"]["val/loss"], abs=1e-4)
    assert runs["ddp_sim"]["val/acc"] == runs["cpu"]["val/acc"]


def test_multirun_with_ddp_gives_one_dir_and_one_wandb_run_per_job(
    mnist_dir: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    result = _run_train_py(
        "-m", "seed=1,2", f"hydra.sweep.dir={sweep_dir}", f"data.data_dir={mnist_dir}",
        "trainer=ddp_sim", *TINY_RUN, "logger=wandb", "test=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]  # children ran no sweep
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    children = re.findall(r"DDP rank 1 starts: (.*)", result.stdout + result.stderr)
    assert len(children) == 2  # each job started its own rank 1
    for job, seed, command in zip(jobs, ("1", "2"), children, strict=True):
        assert " -m " not in command and "seed=1,2" not in command
        assert f" seed={seed} " in command and f'hydra.run.dir="{sweep_dir / job}"' in command
    for job in jobs:
        assert len(list((sweep_dir / job / "wandb").glob("offline-run-*"))) == 1
        assert (sweep_dir / job / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("rank", [0, 1])
def test_a_crashed_rank_ends_the_whole_job_quickly(mnist_dir: Path, tmp_path: Path, rank: int):
    start = time.monotonic()
    result = _run_train_py(
        f"hydra.run.dir={tmp_path / 'run'}", f"data.data_dir={mnist_dir}", "trainer=ddp_sim",
        *TINY_RUN, "trainer.limit_train_batches=4",
        "+callbacks.crash._target_=tests.preemption_helpers.CrashOnRank", f"+callbacks.crash.rank={rank}",
    )  # fmt: skip
    assert result.returncode != 0
    assert f"rank {rank} crashed on purpose" in result.stderr + result.stdout
    assert time.monotonic() - start < 120


def test_seed_and_deterministic_give_bit_identical_runs(compose_train, tmp_path: Path) -> None:
    weights = []
    for name in ("first", "second"):
        cfg = compose_train("logger=none", "test=false", "seed=7", "trainer.deterministic=true")
        cfg.paths.output_dir = str(tmp_path / name)
        cfg.trainer.max_epochs = 1
        cfg.trainer.limit_train_batches = 3
        cfg.trainer.limit_val_batches = 1
        cfg.data.crop_padding = 2
        metrics = train(cfg)
        weights.append(torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True))
        timings = ("seconds", "share")  # wall-clock measurements, not results
        weights[-1]["metrics"] = {k: v for k, v in metrics.items() if not k.endswith(timings)}
    first, second = weights
    assert len(first["metrics"]) > 5
    assert first["metrics"] == second["metrics"]
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key]), key


def test_free_adversarial_training_runs_on_two_processes(mnist_dir: Path, tmp_path: Path) -> None:
    """Free AT drives its optimizer by hand (manual_backward all-reduces the gradients)."""
    run_dir = tmp_path / "free"
    result = _run_train_py(
        f"hydra.run.dir={run_dir}", f"data.data_dir={mnist_dir}", "trainer=ddp_sim",
        "experiment=mnist_free_at", "model.method.replays=3", "data.batch_size=8",
        "data.val_size=16", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.num_sanity_val_steps=0", "logger=csv", "extras.print_config=false",
        "callbacks.adversarial_eval=null", "model.val_attack.steps=1", "test=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2 * 3  # 2 batches per rank, 3 replays each


@pytest.mark.slow  # three 2-process trainings: ~1 min on 2 busy cores
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_two_processes_resume_exactly_after_a_stop(mnist_dir: Path, tmp_path: Path, stop: str):
    """Rank 0 gets the signal after its 3rd batch; both ranks stop after that batch, last.ckpt
    is saved, and `ckpt_path=last` ends with the weights of an uninterrupted 2-process run."""
    common = (
        f"data.data_dir={mnist_dir}", "trainer=ddp_sim", "data.batch_size=8",
        "data.eval_batch_size=8", "data.val_size=16", "data.crop_padding=2",
        "trainer.max_epochs=2", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0", "model.method.attack.steps=1",
        "model.val_attack.steps=1", "callbacks.adversarial_eval=null", "logger=csv",
        "extras.print_config=false", "test=false",
    )  # fmt: skip
    straight = _run_train_py(f"hydra.run.dir={tmp_path / 'straight'}", *common)
    assert straight.returncode == 0, straight.stderr[-3000:]
    run_dir = tmp_path / "stopped"
    stopped = _run_train_py(
        f"hydra.run.dir={run_dir}", *common,
        "+callbacks.stop._target_=tests.preemption_helpers.SignalAtBatch",
        "+callbacks.stop.batch=3", f"+callbacks.stop.signal={stop}",
    )  # fmt: skip
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 3, stopped.stderr[-3000:]
    resumed = _run_train_py(f"hydra.run.dir={run_dir}", *common, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    got = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert got["global_step"] == expected["global_step"] == 8
    for name, value in expected["state_dict"].items():
        assert torch.equal(value, got["state_dict"][name]), name
