"""Consistency regularization (Jeong and Shin 2020, "Consistency Regularization for Certified
Robustness of Smoothed Classifiers")."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab.errors import ConfigError
from advlab.methods.base import TrainingMethod
from advlab.methods.gaussian import add_noise, check_sigma


def consistency_loss(logits: torch.Tensor, draws: int, lbd: float, eta: float) -> torch.Tensor:
    """lbd * mean_i KL(p_bar || p_i) + eta * H(p_bar), per image then averaged.

    `logits` holds `draws` noisy copies of a batch, copy-major ((draws * B, classes)); p_i are
    their softmaxes and p_bar their mean. The KL term pulls every noisy prediction towards the
    mean one (the smoothed classifier's vote becomes confident); the entropy term sharpens it.
    """
    log_probs = F.log_softmax(logits, dim=1).unflatten(0, (draws, -1))
    mean = log_probs.exp().mean(dim=0)
    log_mean = mean.clamp(min=1e-20).log()  # the authors' clamp: a vanishing class adds 0
    kl = (mean * (log_mean - log_probs)).sum(dim=2).mean(dim=0)
    entropy = -(mean * log_mean).sum(dim=1)
    return (lbd * kl + eta * entropy).mean()


class Consistency(TrainingMethod):
    """Cross-entropy on `noise_draws` noisy copies of each image plus the consistency loss of
    their predictions (see `consistency_loss`). No attack.

    The authors' MNIST setting: 2 draws, lbd 20, eta 0.5. Each image costs `noise_draws`
    forward and backward passes.

    Args:
        sigma: standard deviation of the noise (pixel units of [0, 1] images); certify with it.
        noise_draws: noisy copies per image, m in the paper (>= 2: the KL term compares them).
        lbd: weight of the KL term, lambda in the paper.
        eta: weight of the entropy of the mean prediction.
    """

    needs_attack = False

    def __init__(
        self, sigma: float, noise_draws: int = 2, lbd: float = 20.0, eta: float = 0.5
    ) -> None:
        super().__init__(attack=None)
        self.sigma = check_sigma(sigma)
        if isinstance(noise_draws, bool) or not isinstance(noise_draws, int) or noise_draws < 2:
            raise ConfigError(
                f"model.method.noise_draws must be an integer >= 2 (the KL term compares noisy "
                f"copies), got {noise_draws}"
            )
        for name, value in (("lbd", lbd), ("eta", eta)):
            if not value >= 0:
                raise ConfigError(f"model.method.{name} must be >= 0, got {value}")
        self.noise_draws = noise_draws
        self.lbd, self.eta = float(lbd), float(eta)

    def loss(
        self, net: nn.Module, attack: Any, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        copies = torch.cat([x] * self.noise_draws)  # copy-major; keeps x's memory format
        logits = net(add_noise(copies, self.sigma))
        cross_entropy = F.cross_entropy(logits, y.repeat(self.noise_draws))
        regularizer = consistency_loss(logits, self.noise_draws, self.lbd, self.eta)
        return cross_entropy + regularizer, logits[: len(x)]

    def __repr__(self) -> str:
        return (
            f"Consistency(sigma={self.sigma:g}, noise_draws={self.noise_draws}, "
            f"lbd={self.lbd:g}, eta={self.eta:g})"
        )
