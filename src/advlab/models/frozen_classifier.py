"""A trained classifier used as a fixed judge inside another model (AdvGAN's target)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from advlab.errors import ConfigError


class FrozenClassifier(nn.Module):
    """`net` with its weights fixed: always in eval mode, no parameter needs a gradient.

    Gradients still flow through it to its input (an attacker's loss), never into its weights;
    `train()` is a no-op, so Lightning's `model.train()` leaves BatchNorm statistics and dropout
    alone. Keep it out of every optimizer.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.requires_grad_(False)
        self.eval()  # Lightning restores modes it recorded: start in eval mode, not just switch

    def train(self, mode: bool = True) -> FrozenClassifier:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def probe_num_classes(self, image_shape: Sequence[int], where: str) -> int:
        """Logits per image for images of `image_shape`; one line when the net does not fit them."""
        first = next(self.net.parameters(), None)
        probe = torch.rand(2, *image_shape, device=first.device if first is not None else "cpu")
        try:
            with torch.no_grad():
                logits = self.net(probe)
        except (RuntimeError, ValueError) as err:
            raise ConfigError(
                f"{where} ({type(self.net).__name__}) does not take images of shape "
                f"{tuple(image_shape)} (channels, height, width): "
                f"{str(err).strip().splitlines()[0][:160]}"
            ) from err
        if logits.ndim != 2:
            raise ConfigError(f"{where} returns logits of shape {tuple(logits.shape)}, not (N, C)")
        return int(logits.shape[1])
