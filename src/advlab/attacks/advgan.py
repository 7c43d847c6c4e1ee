"""A trained AdvGAN generator behind the attack contract: `attack(x, y) -> x_adv`, x in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from advlab.utils import get_logger

log = get_logger(__name__)


class AdvGANAttack:
    """`AdvGANAttack(model, ckpt_path=...)(x, y)`: one generator forward pass per batch.

    The generator never queries `model`: against the classifier it was trained on (its target)
    this is AdvGAN's semi-white-box attack; against any other it is a transfer (black-box) attack.
    Labels are ignored.

    Args:
        model: the classifier under attack; only its device is used.
        ckpt_path: a checkpoint of a `model=advgan` run.
        eps: Linf budget. The generator was trained for its own eps (its run's `model.eps`): at a
            smaller eps its perturbation is clipped to the budget, a larger eps leaves it as is.
    """

    def __init__(self, model: nn.Module, ckpt_path: str | Path | None = None, eps: float = 0.3):
        # the models package imports this one: import the LightningModule when an attack is built
        from advlab.models.advgan import load_advgan

        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
        self.advgan = load_advgan(ckpt_path, where="attack.ckpt_path", map_location=device).eval()
        self.ckpt_path = str(ckpt_path)
        self.eps = float(eps)
        self.trained_eps = float(self.advgan.hparams.eps)
        if 0 < self.eps < self.trained_eps:
            log.info(
                f"AdvGAN trained for eps {self.trained_eps:g}, attacking at eps {self.eps:g}: "
                f"its perturbations are clipped to the smaller budget"
            )

    def __repr__(self) -> str:
        return f"AdvGANAttack({self.ckpt_path}, Linf, eps={self.eps:g})"

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = images.detach().to(self.advgan.device)
        x_adv = self.advgan.perturb(x)
        if self.eps < self.trained_eps:
            x_adv = x + (x_adv - x).clamp(-self.eps, self.eps)
        return x_adv.to(images.device)
