"""Callbacks that stop a run the way users and clusters do: a signal to the process mid-epoch."""

from __future__ import annotations

import os
import signal
from typing import Any

from lightning.pytorch import Callback, Trainer


class SignalAtBatch(Callback):
    """Send `signal` (a name: SIGTERM, SIGINT, SIGUSR1) to this process as training batch `batch`
    starts (counted from 1 in this process, once), on global rank `rank` only: the run must
    stop after that batch."""

    def __init__(self, batch: int, signal: str = "SIGTERM", rank: int = 0) -> None:
        self.batch = batch
        self.signal = signal
        self.rank = rank
        self.seen = 0

    def on_train_batch_start(self, trainer: Trainer, *_: Any) -> None:
        self.seen += 1
        if self.seen == self.batch and trainer.global_rank == self.rank:
            os.kill(os.getpid(), getattr(signal, self.signal))


class CrashOnRank(Callback):
    """Raise on global rank `rank` at global step `step`: a rank that dies mid-training."""

    def __init__(self, rank: int, step: int = 1) -> None:
        self.rank = rank
        self.step = step

    def on_train_batch_start(self, trainer: Trainer, *_: Any) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            raise RuntimeError(f"rank {self.rank} crashed on purpose")
