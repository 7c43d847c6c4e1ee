"""Training objectives of adversarial training, one function per `model.method`.

Each takes the network, an attack (or None), a batch, and returns the loss to minimize and the
logits on which training accuracy is measured (adversarial logits whenever there is an attack).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Attack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Objective = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def clean_objective(
    net: nn.Module, attack: Attack | None, x: torch.Tensor, y: torch.Tensor, **_: float
):
    """Standard training: cross-entropy on clean images."""
    logits = net(x)
    return F.cross_entropy(logits, y), logits


def adversarial_objective(
    net: nn.Module,
    attack: Attack | None,
    x: torch.Tensor,
    y: torch.Tensor,
    adversarial_fraction: float = 1.0,
    **_: float,
):
    """Madry et al. (PGD-AT), Wong et al. (FGSM-RS), de Jorge et al. (N-FGSM): cross-entropy on
    attacked images.

    The methods differ only in the attack: PGD-k, one FGSM step from a random start clipped to
    the eps-ball (attack/ffgsm), or one step from stronger noise without clipping (attack/nfgsm).
    `adversarial_fraction` < 1 attacks only the first ceil(fraction * batch) images and keeps
    the rest clean (Kurakin et al. 2017's mixed batches): clean accuracy bought with robustness,
    at a lower attack cost.
    """
    if attack is None:
        raise ValueError("this method needs a training attack")
    n = math.ceil(adversarial_fraction * x.shape[0])
    x_adv = attack(x[:n], y[:n])
    if n < x.shape[0]:
        x_adv = torch.cat((x_adv, x[n:]))
    logits = net(x_adv)
    return F.cross_entropy(logits, y), logits


def trades_objective(
    net: nn.Module,
    attack: Attack | None,
    x: torch.Tensor,
    y: torch.Tensor,
    beta: float = 6.0,
    **_: float,
):
    """TRADES (Zhang et al. 2019): CE(f(x), y) + beta * KL(f(x) || f(x_adv)).

    The attack should maximize the same KL term (torchattacks.TPGD does).
    """
    if attack is None:
        raise ValueError("TRADES needs a training attack (attack/tpgd)")
    x_adv = attack(x, y)
    logits_clean = net(x)
    logits_adv = net(x_adv)
    robust = F.kl_div(
        F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean"
    )
    return F.cross_entropy(logits_clean, y) + beta * robust, logits_adv


OBJECTIVES: dict[str, Objective] = {
    "clean": clean_objective,
    "pgd": adversarial_objective,
    "fgsm_rs": adversarial_objective,
    "nfgsm": adversarial_objective,
    "trades": trades_objective,
}
