"""Shuffling that a run interrupted mid-epoch can resume exactly."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

from lightning.pytorch import Trainer
from torch.utils.data import DistributedSampler


class ResumableShuffleSampler(DistributedSampler):
    """DistributedSampler whose epoch can start part-way through, for exact mid-epoch resume.

    Each epoch's order depends only on (seed, epoch) and the shard on (rank, world size), like
    DistributedSampler; the union of the ranks' i-th batches is the single-process i-th batch of
    the same global size. Being a DistributedSampler, Lightning keeps it under DDP instead of
    substituting its own. `skip_next(n)` drops the first n samples of the next pass only: the
    DataModule calls it when a checkpoint saved mid-epoch is restored, so the resumed epoch sees
    exactly the batches the interrupted one had not reached.
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
        self._skip = 0

    def skip_next(self, samples: int) -> None:
        self._skip = max(0, samples)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])


def stream_position(trainer: Trainer) -> dict[str, int]:
    """The epoch the next training batch belongs to, and how many of its batches were trained on.

    Saved with the DataModule's state: Lightning restores that before it asks for the training
    loader, even when configure_optimizers asks early (OneCycleLR's `estimated_stepping_batches`
    makes the loader, and draws its first batch, before the loops are restored).
    """
    done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    if done >= trainer.num_training_batches:  # saved at an epoch's end: the next starts clean
        return {"epoch": trainer.current_epoch + 1, "batches_done": 0}
    return {"epoch": trainer.current_epoch, "batches_done": done}


def resume_at(sampler: ResumableShuffleSampler, position: dict[str, Any], batch_size: int) -> None:
    """Start `sampler`'s next pass where a checkpoint's `stream_position` left the stream."""
    sampler.set_epoch(int(position.get("epoch", 0)))
    sampler.skip_next(int(position.get("batches_done", 0)) * batch_size)
