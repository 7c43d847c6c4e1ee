"""Shuffling that a run interrupted mid-epoch can resume exactly."""

from __future__ import annotations

from collections.abc import Iterator, Sized

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
