"""Per-class quality of a conditional generator: does a classifier see the class that was asked for?

FID says whether samples look like the data; it cannot say whether a "3" asked of a conditional
GAN is a 3. A classifier trained on the same data can: the share of samples of each requested
class that it assigns to that class.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class ClassAgreement:
    """Share of generated samples a frozen classifier assigns to their requested class, per class.

    A plain object, not an nn.Module: the classifier stays out of the GAN's state_dict and DDP.
    Counts are summed over processes in `compute()`.

    Args:
        classifier: images in [0, 1] -> logits (an advlab.nets classifier normalizes inside).
        num_classes: number of classes the generator is conditioned on.
    """

    def __init__(self, classifier: nn.Module, num_classes: int) -> None:
        self.classifier = classifier.eval().requires_grad_(False)
        self.num_classes = num_classes
        self.hits = torch.zeros(num_classes, dtype=torch.long)
        self.counts = torch.zeros(num_classes, dtype=torch.long)

    def to(self, device: torch.device | str) -> ClassAgreement:
        self.classifier.to(device)
        self.hits, self.counts = self.hits.to(device), self.counts.to(device)
        return self

    @torch.no_grad()
    def update(self, images: torch.Tensor, requested: torch.Tensor) -> None:
        """Add generated images in [0, 1] and the classes they were asked to be."""
        predicted = self.classifier(images.float()).argmax(1)
        size = self.num_classes
        self.counts += torch.bincount(requested, minlength=size).to(self.counts)
        self.hits += torch.bincount(requested[predicted == requested], minlength=size).to(self.hits)

    def compute(self) -> dict[str, torch.Tensor]:
        """{"all": share over every sample, "per_class": share per requested class (N/A: nan)}."""
        hits, counts = self.hits.clone(), self.counts.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(hits)
            dist.all_reduce(counts)
        per_class = hits.double() / counts.double()  # nan for a class never asked for
        return {"all": hits.sum().double() / counts.sum().clamp(min=1), "per_class": per_class}

    def reset(self) -> None:
        self.hits.zero_()
        self.counts.zero_()
