"""Regularizers added to an adversarial training objective.

Single-step training (FGSM-RS) can teach a network to bend its loss surface so that one
gradient step finds nothing while a multi-step attack, or a large first step (APGD), still
succeeds: gradient masking, or "catastrophic overfitting" when it happens suddenly. Keeping
the loss close to linear inside the eps-ball removes what that bending relies on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DROPOUT_LAYERS = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)  # fmt: skip


@contextmanager
def dropout_disabled(net: nn.Module) -> Iterator[None]:
    """Run `net` without dropout, everything else in its current mode (BatchNorm untouched).

    The penalty measures the curvature of the network that attacks see (eval mode, no
    dropout); with dropout on, the three forward passes would draw three masks and the
    penalty would mostly measure dropout noise.
    """
    active = [m for m in net.modules() if isinstance(m, DROPOUT_LAYERS) and m.training]
    for layer in active:
        layer.eval()
    try:
        yield
    finally:
        for layer in active:
            layer.train()


def local_linearity_error(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, fraction: float = 1.0
) -> torch.Tensor:
    """ELLE (Abad Rocamora et al., ICLR 2024): how far the loss is from linear inside the ball.

    For two uniform points x_a, x_b of the L-inf ball of radius `eps` around x and a random
    point x_c = (1 - t) x_a + t x_b between them, the squared gap between the loss at x_c and
    the linear interpolation (1 - t) l(x_a) + t l(x_b), averaged over the batch. It costs one
    forward/backward pass on 3x the batch and, unlike GradAlign, no double backpropagation.
    `fraction` < 1 computes it on the first ceil(fraction * batch) images only (batches are
    shuffled, so they are a random subset). Dropout layers are off while it runs.
    """
    n = math.ceil(fraction * x.shape[0])
    x, y = x[:n], y[:n]
    ends = x.repeat(2, *([1] * (x.dim() - 1)))
    ends = ends + eps * (2 * torch.rand_like(ends) - 1)
    t = torch.rand(n, device=x.device, dtype=x.dtype)
    t_image = t.view(-1, *([1] * (x.dim() - 1)))
    between = (1 - t_image) * ends[:n] + t_image * ends[n:]
    with dropout_disabled(net):
        logits = net(torch.cat((ends, between)))
    losses = F.cross_entropy(logits, y.repeat(3), reduction="none")
    loss_a, loss_b, loss_c = losses[:n], losses[n : 2 * n], losses[2 * n :]
    return F.mse_loss(loss_c, (1 - t) * loss_a + t * loss_b)


class AdaptiveLinearityWeight:
    """ELLE-A (same paper): the penalty's weight switched on only when overfitting starts.

    A constant weight large enough to stop catastrophic overfitting also costs clean accuracy
    all through training. ELLE-A starts at weight 0 and watches the penalty: when a step's
    value exceeds the mean of all earlier values by `sensitivity` standard deviations (the
    sudden curvature that precedes overfitting), the weight jumps to `max_weight`; otherwise
    it decays by `decay` per step. The weight for a step is decided by the steps before it.
    Statistics stay on the penalty's device (no host sync per step).
    """

    def __init__(self, max_weight: float, decay: float = 0.99, sensitivity: float = 2.0) -> None:
        self.max_weight = max_weight
        self.decay = decay
        self.sensitivity = sensitivity
        self.count = 0
        # Welford's running mean and sum of squared deviations: stable in float32 (MPS has no
        # float64) over any number of steps.
        self.mean: torch.Tensor = torch.zeros(())
        self.sq_dev: torch.Tensor = torch.zeros(())
        self.weight: torch.Tensor = torch.zeros(())

    def step(self, lin_err: torch.Tensor) -> torch.Tensor:
        """The weight for this step's `lin_err`; then update the statistics with it."""
        value = lin_err.detach().float()
        weight, mean, sq_dev = (t.to(value.device) for t in (self.weight, self.mean, self.sq_dev))
        if self.count > 2:
            std = (sq_dev / self.count).sqrt()
            spike = value > mean + self.sensitivity * std
            self.weight = torch.where(spike, self.max_weight, weight * self.decay)
        else:
            self.weight = weight * self.decay
        self.count += 1
        delta = value - mean
        self.mean = mean + delta / self.count
        self.sq_dev = sq_dev + delta * (value - self.mean)
        return weight

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to carry on where it stopped."""
        return {
            "count": self.count,
            "mean": self.mean.cpu(),
            "sq_dev": self.sq_dev.cpu(),
            "weight": self.weight.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])
        self.mean, self.sq_dev, self.weight = state["mean"], state["sq_dev"], state["weight"]
