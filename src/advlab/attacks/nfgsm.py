"""N-FGSM (de Jorge et al. 2022, "Make Some Noise"): single-step training attack without masking.

torchattacks has no N-FGSM, so it lives here, written as a torchattacks `Attack` so that configs,
the epsilon warm-up and device handling treat it like any other attack.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchattacks.attack import Attack


class NFGSM(Attack):
    """One FGSM step of size `alpha` from x + U(-noise_scale * eps, noise_scale * eps).

    FGSM-RS (Wong et al. 2020) clips the step back into the eps-ball and uses a small random
    start; on MNIST at eps 0.3 that trains models whose robustness to PGD comes from masked
    gradients (APGD finds far more adversarial examples). N-FGSM uses stronger noise (2 eps),
    a step of eps and no projection back to the eps-ball (`clip_scale: null`), which the paper
    shows avoids catastrophic overfitting at single-step cost. The result can lie up to
    (noise_scale + 1) * eps from x: it is a training augmentation, not an eps-bounded attack,
    so never use it to report robust accuracy.

    Args:
        model: network mapping [0, 1] images to logits.
        eps: the budget the noise and step are expressed in (pixel units).
        alpha: FGSM step size (the paper: eps).
        noise_scale: half-width of the uniform noise in units of eps (the paper: 2).
        clip_scale: if set, project the perturbation to clip_scale * eps (the paper: none).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 8 / 255,
        noise_scale: float = 2.0,
        clip_scale: float | None = None,
    ) -> None:
        super().__init__("NFGSM", model)
        self.eps = eps
        self.alpha = alpha
        self.noise_scale = noise_scale
        self.clip_scale = clip_scale
        self.supported_mode = ["default", "targeted"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        target = self.get_target_label(images, labels) if self.targeted else labels

        noise = torch.empty_like(images).uniform_(-1.0, 1.0) * (self.noise_scale * self.eps)
        noisy = torch.clamp(images + noise, 0.0, 1.0).requires_grad_(True)
        loss = F.cross_entropy(self.get_logits(noisy), target)
        if self.targeted:
            loss = -loss
        (grad,) = torch.autograd.grad(loss, noisy)

        delta = noisy.detach() + self.alpha * grad.sign() - images
        if self.clip_scale is not None:
            bound = self.clip_scale * self.eps
            delta = torch.clamp(delta, -bound, bound)
        return torch.clamp(images + delta, 0.0, 1.0).detach()
