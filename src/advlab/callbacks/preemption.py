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
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException

from advlab.utils.pylogger import get_logger

log = get_logger(__name__)


class CheckpointOnInterrupt(Callback):
    """Save `<dirpath>/<filename>.ckpt` when a run is stopped by SIGTERM, Ctrl-C (SIGINT) or,
    under trainer=slurm, SLURM's requeue signal.

    Lightning answers SIGTERM by finishing the current batch and raising SIGTERMException; nothing
    is saved by default, and under DDP a SIGTERM that reaches rank 0 alone can leave the ranks
    waiting on each other. Ctrl-C would raise KeyboardInterrupt wherever the code happens to be
    (inside an optimizer step, say), so a checkpoint taken then is not a state any uninterrupted
    run passes through. During training all three signals therefore take one path: rank 0 notes
    the request, broadcasts it after every training batch, every rank stops after the same batch
    (Lightning's SIGTERMException), and the checkpoint is exact. Other ranks ignore their own
    copy of the signal. A second signal gets the usual handling (Ctrl-C stops at once). A crash (e.g. a NaN loss) saves nothing, so it cannot overwrite the last
    good checkpoint. The default file is `last.ckpt`: `ckpt_path=last` resumes the run.
    (Lightning's OnExceptionCheckpoint saves on any exception and deletes its file when a run
    ends normally, so it fits neither need.)
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self._previous_handlers: dict[int, Any] = {}
        self._requeue = False
        self._stop_requested = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # not on_fit_start: Lightning records the handlers to restore after that hook
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self._stop_requested = False
        signals = [signal.SIGINT, signal.SIGTERM, *self._requeue_signal(trainer)]
        self._previous_handlers = {signum: signal.getsignal(signum) for signum in signals}
        for signum in signals:
            handler = lambda num, _, t=trainer: self._stop_after_this_batch(t, num)  # noqa: E731
            signal.signal(signum, handler if trainer.global_rank == 0 else signal.SIG_IGN)

    @staticmethod
    def _requeue_signal(trainer: Trainer) -> list[signal.Signals]:
        """SLURM's requeue signal, when Lightning requeues this job (trainer=slurm).

        Lightning's own handler saves `hpc_ckpt_<n>.ckpt` the moment the signal arrives, in the
        middle of a batch, so the requeued job does not continue exactly; here the signal stops
        the run after the batch, and that handler runs then (it saves and requeues).
        """
        environment = trainer._accelerator_connector.cluster_environment
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            return [environment.requeue_signal or signal.SIGUSR1]
        return []

    def _stop_after_this_batch(self, trainer: Trainer, signum: int) -> None:
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        log.warning(f"{what}: finishing this batch, then saving {self.path}")
        self._restore_handlers()  # a second Ctrl-C stops at once
        self._requeue = signum not in (signal.SIGINT, signal.SIGTERM)
        self._stop_requested = True

    def on_train_batch_end(self, trainer: Trainer, *_: Any) -> None:
        # every rank learns rank 0's request at the same batch, so all of them stop after it
        if trainer.strategy.broadcast(self._stop_requested, src=0):
            # the flag Lightning's SIGTERM handler sets; the loop checks it right after this hook
            trainer._signal_connector.received_sigterm = True

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException):
        self._restore_handlers()
        if not isinstance(exception, SIGTERMException):
            return
        trainer.save_checkpoint(self.path)
        log.warning(f"Saved {self.path}: resume with ckpt_path=last in the same run dir")
        # only rank 0 knows which signal it was; every rank must join the hpc_ckpt save
        if trainer.strategy.broadcast(self._requeue, src=0):
            # Lightning's requeue handler, now at a batch end: hpc_ckpt_<n>.ckpt, scontrol requeue
            trainer._signal_connector._slurm_sigusr_handler_fn(
                self._requeue_signal(trainer)[0], None
            )


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
