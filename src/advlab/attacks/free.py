"""The perturbation of "free" adversarial training (Shafahi et al. 2019, "Adversarial Training
for Free!"): a training attack that costs no extra forward/backward pass.

Free AT (`method=free`, advlab.methods.FreeAT) replays each batch `model.method.replays` times. Every replay runs one forward/backward
pass on x + delta that yields both the weights' gradient (one optimizer step) and the input
gradient (one signed step on delta). delta is carried from replay to replay and on to the next
batch, so over the replays it climbs the loss like a multi-step attack, while the weights keep
learning. It lives here as a torchattacks `Attack` so that configs, the epsilon warm-up and
device handling treat it like any other attack.
"""

from __future__ import annotations

import torch
from torch import nn
from torchattacks.attack import Attack


class FreePerturbation(Attack):
    """Returns x + delta for the delta that earlier replays built; `step` moves delta.

    Calling it computes no gradient: `advlab.methods.FreeAT` takes the input gradient
    from its own backward pass and hands it to `step`. Called on its own, nothing moves delta,
    so it is a training attack only (`training_only`): never report robust accuracy with it.

    Args:
        model: network mapping [0, 1] images to logits (torchattacks binds every attack to one).
        eps: L-inf budget of delta (pixel units).
        alpha: size of the signed step per replay (Shafahi et al.: eps; on MNIST at eps 0.3,
            eps / 2 trains a robust network, eps one that masks gradients).
    """

    training_only = True

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 8 / 255) -> None:
        super().__init__("FreePerturbation", model)
        self.eps = eps
        self.alpha = alpha
        self.delta: torch.Tensor | None = None

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.detach().to(self.device)  # read only: no copy per replay
        if self.delta is None or self.delta.shape != images.shape:
            # the first batch, or a last batch of another size: start from zero
            self.delta = torch.zeros_like(images)
        delta = self.delta.clamp(-self.eps, self.eps)
        return (images + delta).clamp(0.0, 1.0)

    def step(self, images: torch.Tensor, adv_images: torch.Tensor, grad: torch.Tensor) -> None:
        """One signed ascent step of delta from `adv_images` (what `forward` returned for
        `images`), with `grad` the loss gradient there; projected to the ball and [0, 1]."""
        delta = adv_images.detach() - images + self.alpha * grad.sign()
        delta = delta.clamp(-self.eps, self.eps)
        self.delta = (images + delta).clamp(0.0, 1.0) - images
