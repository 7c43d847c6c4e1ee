"""In-memory tensors fetched a whole batch at a time.

A DataLoader over a plain `TensorDataset` indexes every image on its own and then stacks the
pieces (`default_collate`): two Python-level tensor ops per image. With a small network on a
CPU that overhead is a visible share of a training step. `BatchedTensorDataset.__getitems__`
lets the DataLoader (and `Subset`, hence `random_split`) fetch a batch with one indexing op per
tensor; `keep_batch` is the matching collate function.
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset


class BatchedTensorDataset(TensorDataset):
    """A `TensorDataset` whose DataLoader fetches whole batches (`__getitems__`).

    Items stay what a `TensorDataset` gives (`dataset[i]` -> one image and its label), so
    anything that reads single items keeps working. Use it with `collate_fn=keep_batch`.
    """

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        # index_select, not tensor[index]: advanced indexing of a uint8 image tensor is an
        # order of magnitude slower per batch on a CPU (scripts/benchmark.py)
        return tuple(tensor.index_select(0, index) for tensor in self.tensors)


def keep_batch(batch: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """Collate function for `BatchedTensorDataset`: the batch arrives already stacked."""
    return list(batch)
