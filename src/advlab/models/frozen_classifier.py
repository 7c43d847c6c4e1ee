"""A trained classifier used as a fixed judge inside another model (AdvGAN's target)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from torch import nn

from advlab.errors import ConfigError

#: hyperparameters every RobustClassifier checkpoint has (and GAN / AdvGAN ones do not)
CLASSIFIER_HPARAMS = ("net", "method")


class FrozenClassifier(nn.Module):
    """`net` with its weights fixed: always in eval mode, no parameter needs a gradient.

    Gradients still flow through it to its input (an attacker's loss), never into its weights;
    `train()` is a no-op, so Lightning's `model.train()` leaves BatchNorm statistics and dropout
    alone. Keep it out of every optimizer.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.requires_grad_(False)
        self.eval()  # Lightning restores modes it recorded: start in eval mode, not just switch

    def train(self, mode: bool = True) -> FrozenClassifier:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def probe_num_classes(self, image_shape: Sequence[int], where: str) -> int:
        """Logits per image for images of `image_shape`; one line when the net does not fit them."""
        first = next(self.net.parameters(), None)
        probe = torch.rand(2, *image_shape, device=first.device if first is not None else "cpu")
        try:
            with torch.no_grad():
                logits = self.net(probe)
        except (RuntimeError, ValueError) as err:
            raise ConfigError(
                f"{where} ({type(self.net).__name__}) does not take images of shape "
                f"{tuple(image_shape)} (channels, height, width): "
                f"{str(err).strip().splitlines()[0][:160]}"
            ) from err
        if logits.ndim != 2:
            raise ConfigError(f"{where} returns logits of shape {tuple(logits.shape)}, not (N, C)")
        return int(logits.shape[1])


def load_classifier_net(path: str | Path | None, where: str) -> tuple[dict[str, Any], nn.Module]:
    """(net config, net with trained weights) of a `model=robust` checkpoint, on CPU.

    Anything else (no file, not a checkpoint, a GAN's checkpoint) is one ConfigError naming
    `where` (e.g. `model.target_ckpt`) and what the file holds instead.
    """
    if path in (None, "", "???"):
        raise ConfigError(
            f"{where} is required: a model=robust checkpoint, e.g. "
            f"logs/train/runs/<run>/checkpoints/last.ckpt of experiment=mnist_clean"
        )
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError(f"{where}={path}: no file there (expected a model=robust checkpoint)")
    try:  # the user's own training output; Lightning checkpoints hold more than tensors
        checkpoint = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as err:  # any unreadable file means the same to the user
        first_line = str(err).splitlines()[0][:160] if str(err) else "unreadable"
        raise ConfigError(
            f"{where}={path} is not a PyTorch checkpoint ({type(err).__name__}: {first_line})"
        ) from None
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise ConfigError(f"{where}={path} is not a Lightning checkpoint (no state_dict)")
    hparams = checkpoint.get("hyper_parameters") or {}
    if not all(key in hparams for key in CLASSIFIER_HPARAMS):
        modules = sorted({key.split(".", 1)[0] for key in checkpoint["state_dict"]})
        raise ConfigError(
            f"{where}={path} is not a RobustClassifier checkpoint (it holds "
            f"{', '.join(modules) or 'nothing'}): train the classifier with model=robust, "
            f"e.g. experiment=mnist_clean"
        )
    net_cfg = dict(hparams["net"])
    prefix = "net."
    weights = {
        key[len(prefix) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(prefix)
    }
    try:
        net = hydra.utils.instantiate(net_cfg)
        net.load_state_dict(weights)
    except Exception as err:
        raise ConfigError(
            f"{where}={path}: cannot rebuild its network ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0][:200]})"
        ) from None
    return net_cfg, net
