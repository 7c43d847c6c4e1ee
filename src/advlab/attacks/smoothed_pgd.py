"""PGD against a smoothed classifier (Salman et al. 2019, "Provably Robust Deep Learning via
Adversarially Trained Smoothed Classifiers"): the empirical check of a randomized-smoothing
certificate.

Distance Measure: L2, in pixel units of [0, 1] images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advlab.errors import ConfigError


class SmoothedPGD:
    """L2 PGD on the smoothed soft classifier: each step ascends
    -log(mean_i softmax(f(x' + delta_i))_y) over `noise_draws` fresh Gaussian draws (an
    expectation-over-transformation gradient), steps along the normalized gradient, projects onto
    the L2 ball of radius `eps` and into [0, 1].

    The base classifier's votes under noise are what the smoothed classifier counts; attacking a
    single noisy or noise-free copy of it would attack the wrong function. Judge the result with
    `SmoothedClassifier.predict`: an image counts as robust when the smoothed classifier still
    answers its label.

    Args:
        model: the base classifier f (logits for [0, 1] images), used in eval mode.
        sigma: the smoothing noise's standard deviation.
        eps: L2 radius of the perturbation.
        steps: gradient steps.
        noise_draws: noise draws per step (m in the paper).
        alpha: step size (default 2 * eps / steps, the authors').
        seed: seed of the noise (its own generator: no other random state changes).

    Example::

        x_adv = SmoothedPGD(net, sigma=0.25, eps=0.5)(x, y)
    """

    norm = "L2"

    def __init__(
        self,
        model: nn.Module,
        sigma: float,
        eps: float,
        steps: int = 20,
        noise_draws: int = 8,
        alpha: float | None = None,
        seed: int = 0,
    ) -> None:
        if not sigma > 0:
            raise ConfigError(f"SmoothedPGD: sigma must be > 0, got {sigma}")
        if not eps >= 0:
            raise ConfigError(f"SmoothedPGD: eps must be >= 0 (an L2 radius), got {eps}")
        if steps < 1 or noise_draws < 1:
            raise ConfigError(
                f"SmoothedPGD: steps and noise_draws must be >= 1, got {steps} and {noise_draws}"
            )
        self.model = model
        self.sigma, self.eps = float(sigma), float(eps)
        self.steps, self.noise_draws = steps, noise_draws
        self.alpha = float(alpha) if alpha is not None else 2 * self.eps / steps
        self.seed = seed

    def _loss(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Negative log of the smoothed soft classifier's probability of y, summed over images."""
        copies = torch.cat([x] * self.noise_draws)
        noise = torch.randn(copies.shape, generator=generator, device=x.device, dtype=x.dtype)
        probs = F.softmax(self.model(copies + self.sigma * noise), dim=1)
        mean = probs.unflatten(0, (self.noise_draws, -1)).mean(dim=0)
        return F.nll_loss(mean.clamp(min=1e-20).log(), y, reduction="sum")

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.eps == 0:
            return x.detach().clone()
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        was_training = self.model.training
        self.model.eval()
        clean = x.detach()
        adv = clean.clone()
        try:
            for _ in range(self.steps):
                adv.requires_grad_(True)
                loss = self._loss(adv, y, generator)
                # a model that ignores its input leaves nothing to follow (a zero gradient)
                (grad,) = torch.autograd.grad(loss, [adv], allow_unused=True)
                grad = torch.zeros_like(adv) if grad is None else grad
                norms = grad.flatten(1).norm(dim=1).clamp(min=1e-12)
                step = grad / norms.view(-1, *[1] * (x.dim() - 1))
                delta = (adv.detach() + self.alpha * step - clean).renorm(2, 0, self.eps)
                adv = (clean + delta).clamp(0, 1)
        finally:
            self.model.train(was_training)
        return adv.detach()
