"""FGSM-RS, "fast" adversarial training (Wong et al. 2020, "Fast is better than free"), with an
optional local-linearity penalty (ELLE, Abad Rocamora et al. 2024) against gradient masking."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn

from advlab.errors import ConfigError
from advlab.methods.pgd import PGDAT


class FGSMRS(PGDAT):
    """PGD-AT's loss on one FGSM step from a random start (attack/ffgsm), plus
    `linearity_weight` * ELLE on the first `linearity_fraction` of each batch.

    One gradient step per batch can teach a network to bend its loss surface so that a single
    step finds nothing while multi-step attacks still succeed (gradient masking, "catastrophic
    overfitting"). ELLE keeps the loss close to linear inside the eps-ball, which is what that
    bending breaks, at the cost of one forward/backward pass on 3x the penalized images.

    Args:
        attack: the single-step attack, typically attack/ffgsm.
        linearity_weight: weight of the ELLE penalty (0: plain FGSM-RS).
        linearity_fraction: share of each batch the penalty is computed on (batches are
            shuffled, so the first images are a random subset).
        eps_warmup_epochs: see `TrainingMethod`.
    """

    def __init__(
        self,
        attack: Mapping[str, Any],
        linearity_weight: float = 0.0,
        linearity_fraction: float = 1.0,
        eps_warmup_epochs: float = 0.0,
    ) -> None:
        super().__init__(attack, eps_warmup_epochs)
        if not linearity_weight >= 0:
            raise ConfigError(f"model.method.linearity_weight must be >= 0, got {linearity_weight}")
        if not 0 < linearity_fraction <= 1:
            raise ConfigError(
                f"model.method.linearity_fraction must be in (0, 1], got {linearity_fraction}"
            )
        self.linearity_weight = float(linearity_weight)
        self.linearity_fraction = float(linearity_fraction)

    def training_step(
        self, module: LightningModule, x: torch.Tensor, y: torch.Tensor, batch_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attack = self.prepared_attack(module, batch_idx)
        loss, logits = self.loss(module.net, attack, x, y)
        if self.linearity_weight > 0:
            error = local_linearity_error(
                module.net, x, y, float(attack.eps), self.linearity_fraction
            )
            module.log("train/lin_err", error.detach(), on_step=False, on_epoch=True)
            loss = loss + self.linearity_weight * error
        return loss, logits


def local_linearity_error(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, fraction: float = 1.0
) -> torch.Tensor:
    """ELLE: how far the loss is from linear inside the Linf ball of radius `eps` around x.

    For two uniform points x_a, x_b of the ball and x_c = (1 - t) x_a + t x_b, the squared gap
    between the loss at x_c and (1 - t) l(x_a) + t l(x_b), averaged over the first
    ceil(fraction * batch) images. No double backpropagation (unlike GradAlign).
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
