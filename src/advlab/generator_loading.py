"""The generator of a GAN or AdvGAN checkpoint, rebuilt alone (no discriminator, no target)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from torch import nn

from advlab.checkpoints import check_targets
from advlab.errors import ConfigError


def rebuild_generator(
    config: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    prefix: str,
    where: str,
    path: str | Path | None,
    **arguments: Any,
) -> nn.Module:
    """`config` built with `arguments` and loaded with the `prefix` weights of `state`, frozen
    in eval mode. Its `_target_` is checked first; whatever else fails is one line naming the
    file, since a file that does not hold what it says is the same mistake to the user."""
    check_targets(config, f"{where}={path}")
    weights = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    try:
        generator = hydra.utils.instantiate(config, **arguments)
        generator.load_state_dict(weights)
    except Exception as err:
        raise ConfigError(
            f"{where}={path}: cannot rebuild its generator ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0][:200]})"
        ) from None
    return generator.eval().requires_grad_(False)
