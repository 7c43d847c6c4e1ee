"""Pure pieces of a GAN training step: the losses, the generator EMA, the divergence guard,
the two optimizers and their schedulers.

`TwoPlayerModule` (two_player.py) wires them into Lightning; nothing here knows a module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import hydra
import torch
import torch.nn.functional as F

from advlab.errors import AdvlabError
from advlab.models.schedules import build_scheduler

GAN_LOSSES = ("bce", "hinge")


class TrainingDivergedError(AdvlabError, FloatingPointError):
    """A loss became NaN or infinite: training stopped before the bad update was applied."""


def discriminator_loss(
    loss: str, real_logits: torch.Tensor, fake_logits: torch.Tensor
) -> torch.Tensor:
    """`bce`: -log D(x) - log(1 - D(G(z))); `hinge`: relu(1 - D(x)) + relu(1 + D(G(z)))."""
    if loss == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(loss: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """`bce`: the non-saturating -log D(G(z)); `hinge`: -D(G(z))."""
    if loss == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()


def ema_average(
    averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor, decay: float
) -> torch.Tensor:
    """One EMA step for `torch.optim.swa_utils.AveragedModel(avg_fn=partial(ema_average, decay=d))`.

    The decay warms up as min(decay, (1 + n) / (10 + n)) so that the early averages do not keep
    the random initial weights. Computed on tensors: no device-to-host sync per parameter.
    Integer buffers (BatchNorm's batch count) cannot be averaged and follow the model.
    """
    if not averaged.is_floating_point():
        return current
    n = num_averaged.to(averaged.device, torch.float32)
    rate = ((1 + n) / (10 + n)).clamp(max=decay)
    return averaged.lerp(current, (1 - rate).to(averaged.dtype))


def refuse_non_finite_weights(checkpoint: dict[str, Any], epoch: int) -> None:
    """Raise TrainingDivergedError instead of writing NaN/inf weights over a good checkpoint."""
    for key, tensor in checkpoint["state_dict"].items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TrainingDivergedError(
                f"weights {key} are not finite at epoch {epoch}: checkpoint not saved, the "
                f"previous one is kept. Lower the learning rates"
            )


def build_optimizers(
    hparams: Mapping[str, Any],
    generator_params: Iterable[torch.nn.Parameter],
    discriminator_params: Iterable[torch.nn.Parameter],
    stepping_batches: int,
) -> Any:
    """[G's optimizer, D's optimizer] from `optimizer_g`/`optimizer_d`, plus a scheduler each
    when `hparams["scheduler"]` is set. A scheduler that takes `total_iters` (PolynomialLR:
    linear decay to 0) gets each optimizer's number of steps in a run of `stepping_batches`."""
    optimizers = [
        hydra.utils.instantiate(hparams["optimizer_g"])(params=generator_params),
        hydra.utils.instantiate(hparams["optimizer_d"])(params=discriminator_params),
    ]
    if not hparams["scheduler"]:
        return optimizers
    steps = (max(1, stepping_batches // hparams["d_steps_per_g_step"]), stepping_batches)
    schedulers = [
        build_scheduler(hparams["scheduler"], opt, n)
        for opt, n in zip(optimizers, steps, strict=True)
    ]
    return optimizers, schedulers
