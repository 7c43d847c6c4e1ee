"""Callbacks that make a run resumable exactly after preemption (SIGTERM, SLURM time limits, Ctrl-C)."""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from advlab.utils.pylogger import get_logger

log = get_logger(__name__)


class CheckpointOnInterrupt(Callback):
    """Save `<dirpath>/<filename>.ckpt` when a run is stopped by SIGTERM or Ctrl-C (SIGINT).

    Lightning answers SIGTERM by finishing the current batch and raising SIGTERMException; nothing
    is saved by default. Ctrl-C would raise KeyboardInterrupt wherever the code happens to be
    (inside an optimizer step, say), so a checkpoint taken then is not a state any uninterrupted
    run passes through. During `fit` the first Ctrl-C is therefore turned into Lightning's SIGTERM
    path: the batch finishes, all ranks stop at the same batch (rank 0's flag is broadcast every
    step; other ranks ignore their own Ctrl-C), and the checkpoint is exact. A second Ctrl-C stops
    at once, as usual. A crash (e.g. a NaN loss) saves nothing, so it cannot overwrite the last
    good checkpoint. The default file is `last.ckpt`: `ckpt_path=last` resumes the run.
    (Lightning's OnExceptionCheckpoint saves on any exception and deletes its file when a run
    ends normally, so it fits neither need.)
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self._previous_handler: Any = None
        self._installed = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # not on_fit_start: Lightning records the handlers to restore after that hook
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self._previous_handler = signal.getsignal(signal.SIGINT)
        self._installed = True
        if trainer.global_rank == 0:
            signal.signal(signal.SIGINT, lambda *_: self._stop_after_this_batch(trainer))
        else:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _stop_after_this_batch(self, trainer: Trainer) -> None:
        log.warning(
            f"Ctrl-C: finishing this batch, then saving {self.path} (Ctrl-C again stops at once)"
        )
        self._restore_handler()
        # the flag Lightning's SIGTERM handler sets; the training loops check it at batch ends
        trainer._signal_connector.received_sigterm = True

    def _restore_handler(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._installed = False

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore_handler()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException):
        self._restore_handler()
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)
            log.warning(f"Saved {self.path}: resume with ckpt_path=last in the same run dir")


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
