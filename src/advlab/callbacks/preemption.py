"""Callbacks that make a run resumable exactly after preemption (SIGTERM, SLURM time limits)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException


class CheckpointOnSigterm(Callback):
    """Save `<dirpath>/<filename>.ckpt` when the run is terminated (SIGTERM), mid-epoch included.

    Lightning answers SIGTERM by finishing the current batch and raising SIGTERMException; nothing
    is saved by default. Only termination is handled: a crash (e.g. a NaN loss) must not
    overwrite the last good checkpoint. The default file is `last.ckpt`, so `ckpt_path=last`
    picks the run up where it stopped. (Lightning's OnExceptionCheckpoint saves on any
    exception and deletes its file when a run ends normally, so it fits neither need.)
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException):
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)


class RandomStateCheckpoint(Callback):
    """Store the random generators' states in every checkpoint and restore them on resume.

    Attack random starts and batch augmentations draw from the global generators; without this
    a resumed run draws different numbers than an uninterrupted one would have. States are kept
    as tensors and tuples so that checkpoints still load with `torch.load(weights_only=True)`.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": (
                kind,
                torch.from_numpy(keys.astype(np.int64)),
                position,
                has_gauss,
                cached_gauss,
            ),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        random.setstate(state_dict["python"])
        kind, keys, position, has_gauss, cached_gauss = state_dict["numpy"]
        np.random.set_state(
            (kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss)
        )
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
