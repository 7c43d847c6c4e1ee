"""A trained AdvGAN generator behind the attack contract: `attack(x, y) -> x_adv`, x in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from advlab.checkpoints import lightning_parts, read_checkpoint
from advlab.errors import ConfigError
from advlab.generator_loading import rebuild_generator
from advlab.nets.perturbation import perturb_images
from advlab.utils import get_logger

log = get_logger(__name__)

#: hyperparameters every AdvGAN checkpoint has (`advlab.models.AdvGAN` writes them)
ADVGAN_HPARAMS = ("target_net", "eps", "generator", "image_shape")


def load_generator(path: str | Path | None, where: str) -> tuple[nn.Module, float]:
    """(generator in eval mode on the CPU, the eps it was trained for) of an AdvGAN checkpoint.

    Only the generator is built: the target classifier and the discriminator stored beside it
    are not needed to attack, and nothing the file names is built before it is checked.
    """
    checkpoint = read_checkpoint(path, where)
    hparams, state = lightning_parts(checkpoint, path, where, ADVGAN_HPARAMS, kind="an AdvGAN")
    shape = tuple(int(v) for v in hparams["image_shape"])
    generator = rebuild_generator(
        hparams["generator"], state, "generator.", where, path, image_shape=shape
    )
    return generator, float(hparams["eps"])


class AdvGANAttack:
    """`AdvGANAttack(model, ckpt_path=...)(x, y)`: one generator forward pass per batch.

    The generator never queries `model`: against the classifier it was trained on (its target)
    this is AdvGAN's semi-white-box attack; against any other it is a transfer (black-box) attack.
    Labels are ignored. Distance measure: Linf.

    Args:
        model: the classifier under attack; only its device is used.
        ckpt_path: a checkpoint of a `model=advgan` run.
        eps: Linf budget. The generator was trained for its own eps (its run's `model.eps`): at a
            smaller eps its perturbation is clipped to the budget, a larger eps leaves it as is.
        norm: the distance the config declares; only Linf is what the generator bounds.
    """

    def __init__(
        self,
        model: nn.Module,
        ckpt_path: str | Path | None = None,
        eps: float = 0.3,
        norm: str = "Linf",
    ) -> None:
        if norm != "Linf":
            raise ConfigError(
                f"attack.norm={norm}: AdvGAN's generator bounds its perturbations in Linf only"
            )
        first = next(model.parameters(), None)
        self.device = first.device if first is not None else torch.device("cpu")
        generator, self.trained_eps = load_generator(ckpt_path, where="attack.ckpt_path")
        self.generator = generator.to(self.device)
        self.ckpt_path = str(ckpt_path)
        self.eps = float(eps)
        if 0 < self.eps < self.trained_eps:
            log.info(
                f"AdvGAN trained for eps {self.trained_eps:g}, attacking at eps {self.eps:g}: "
                f"its perturbations are clipped to the smaller budget"
            )

    def __repr__(self) -> str:
        return f"AdvGANAttack({self.ckpt_path}, Linf, eps={self.eps:g})"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = images.detach().to(self.device)
        x_adv = perturb_images(self.generator, x, self.trained_eps)
        if self.eps < self.trained_eps:
            x_adv = x + (x_adv - x).clamp(-self.eps, self.eps)
        return x_adv.to(images.device)
