"""Standard training: the undefended baseline."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab.methods.base import TrainingMethod


class Clean(TrainingMethod):
    """Cross-entropy on clean images; no attack."""

    needs_attack = False

    def __init__(self) -> None:
        super().__init__(attack=None)

    def loss(
        self, net: nn.Module, attack: Any, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = net(x)
        return F.cross_entropy(logits, y), logits
