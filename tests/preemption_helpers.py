"""A callback that preempts a run the way SLURM does: SIGTERM to the process mid-epoch."""

from __future__ import annotations

import os
import signal
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class SigtermAtStep(Callback):
    """Send SIGTERM to this process after global step `step` (once)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *_: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class CrashOnRank(Callback):
    """Raise on global rank `rank` at global step `step`: a rank that dies mid-training."""

    def __init__(self, rank: int, step: int = 1) -> None:
        self.rank = rank
        self.step = step

    def on_train_batch_start(self, trainer: Trainer, *_: Any) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            raise RuntimeError(f"rank {self.rank} crashed on purpose")
