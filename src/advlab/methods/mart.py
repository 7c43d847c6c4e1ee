"""MART (Wang et al. 2020, "Improving Adversarial Robustness Requires Revisiting Misclassified
Examples")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab.errors import ConfigError
from advlab.methods.base import TrainingMethod


class MART(TrainingMethod):
    """Boosted CE on x_adv + beta * KL(f(x) || f(x_adv)) weighted by 1 - p_y(x).

    The boosted CE adds -log(1 - max_{k != y} p_k(x_adv)), a margin term that pushes the runner-up
    class down; the weight 1 - p_y(x) spends the KL term on the images the network gets wrong or
    barely right, which the paper shows matter most for robustness. As the authors' code.

    Args:
        attack: the inner maximization on cross-entropy, typically attack/pgd.
        beta: weight of the KL term (the paper: 6 on CIFAR-10).
        eps_warmup_epochs: see `TrainingMethod`.
    """

    def __init__(
        self, attack: Mapping[str, Any], beta: float = 6.0, eps_warmup_epochs: float = 0.0
    ) -> None:
        super().__init__(attack, eps_warmup_epochs)
        if not beta >= 0:
            raise ConfigError(f"model.method.beta must be >= 0, got {beta}")
        self.beta = float(beta)

    def loss(
        self, net: nn.Module, attack: Any, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = attack(x, y)
        # two passes, as the authors': BatchNorm sees clean and attacked batches apart
        logits_clean, logits_adv = net(x), net(x_adv)
        return mart_loss(logits_clean, logits_adv, y, self.beta), logits_adv


def mart_loss(
    logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float
) -> torch.Tensor:
    """The MART objective for a batch (the small constants are the authors').

    Computed in float32: CPU autocast keeps softmax in bfloat16, where 1.0001 rounds to 1, so a
    runner-up probability that rounds to 1 made the margin term log(1e-12) and its gradient ~1e12.
    """
    logits_clean, logits_adv = logits_clean.float(), logits_adv.float()
    probs_adv = F.softmax(logits_adv, dim=1)
    runner_up = probs_adv.masked_fill(F.one_hot(y, probs_adv.shape[1]).bool(), -1).argmax(dim=1)
    boosted_ce = F.cross_entropy(logits_adv, y) + F.nll_loss(
        torch.log(1.0001 - probs_adv + 1e-12), runner_up
    )
    probs_clean = F.softmax(logits_clean, dim=1)
    true_prob = probs_clean.gather(1, y[:, None]).squeeze(1)
    kl = F.kl_div(torch.log(probs_adv + 1e-12), probs_clean, reduction="none").sum(dim=1)
    return boosted_ce + beta * (kl * (1.0000001 - true_prob)).mean()
