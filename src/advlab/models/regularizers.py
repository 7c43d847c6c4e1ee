"""Regularizers added to an adversarial training objective.

Single-step training (FGSM-RS) can teach a network to bend its loss surface so that one
gradient step finds nothing while a multi-step attack, or a large first step (APGD), still
succeeds: gradient masking, or "catastrophic overfitting" when it happens suddenly. Keeping
the loss close to linear inside the eps-ball removes what that bending relies on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def local_linearity_error(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, fraction: float = 1.0
) -> torch.Tensor:
    """ELLE (Abad Rocamora et al., ICLR 2024): how far the loss is from linear inside the ball.

    For two uniform points x_a, x_b of the L-inf ball of radius `eps` around x and a random
    point x_c = (1 - t) x_a + t x_b between them, the squared gap between the loss at x_c and
    the linear interpolation (1 - t) l(x_a) + t l(x_b), averaged over the batch. It costs one
    forward/backward pass on 3x the batch and, unlike GradAlign, no double backpropagation.
    `fraction` < 1 computes it on the first ceil(fraction * batch) images only (batches are
    shuffled, so they are a random subset).
    """
    n = math.ceil(fraction * x.shape[0])
    x, y = x[:n], y[:n]
    ends = x.repeat(2, *([1] * (x.dim() - 1)))
    ends = ends + eps * (2 * torch.rand_like(ends) - 1)
    t = torch.rand(n, device=x.device, dtype=x.dtype)
    t_image = t.view(-1, *([1] * (x.dim() - 1)))
    between = (1 - t_image) * ends[:n] + t_image * ends[n:]
    losses = F.cross_entropy(net(torch.cat((ends, between))), y.repeat(3), reduction="none")
    loss_a, loss_b, loss_c = losses[:n], losses[n : 2 * n], losses[2 * n :]
    return F.mse_loss(loss_c, (1 - t) * loss_a + t * loss_b)
