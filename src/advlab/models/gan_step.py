"""The adversarial-training step shared by GAN and AdvGAN: losses, D/G updates, EMA, NaN guard.

One discriminator update per batch and one generator update every `d_steps_per_g_step` batches,
through Lightning's optimizer wrappers (`toggle_optimizer`, `manual_backward`, `step`) so that
`global_step`, checkpoints and resume count both optimizers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn

from advlab.errors import AdvlabError

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


def grad_norm(module: nn.Module) -> torch.Tensor:
    """L2 norm of all gradients of `module` (after DDP's all-reduce, so the same on every rank)."""
    norms = [p.grad.detach().norm() for p in module.parameters() if p.grad is not None]
    return torch.stack(norms).norm() if norms else torch.zeros(())


def check_finite(module: LightningModule, name: str, value: torch.Tensor) -> None:
    """Raise TrainingDivergedError (on every process at once) when `value` is NaN or infinite.

    Checked before the backward pass, so the weights and last.ckpt stay those of the last good
    update. The decision is reduced across processes: a rank that raised alone would leave the
    others waiting in the next collective.
    """
    bad = not bool(torch.isfinite(value).all())
    trainer = module._trainer
    if trainer is not None:
        bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
    if bad:
        raise TrainingDivergedError(
            f"{name} is not finite (NaN or inf) at epoch {module.current_epoch}, global step "
            f"{module.global_step}: training stopped, the last checkpoint written before "
            f"this epoch is kept (checkpoints/last.ckpt). Lower the learning rates, or try "
            f"model.loss=hinge / spectral norm in the discriminator"
        )


def refuse_non_finite_weights(module: LightningModule, checkpoint: dict[str, Any]) -> None:
    """Raise TrainingDivergedError instead of writing NaN/inf weights over a good checkpoint.

    Call it from `on_save_checkpoint`.
    """
    for key, tensor in checkpoint["state_dict"].items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TrainingDivergedError(
                f"weights {key} are not finite at epoch {module.current_epoch}: checkpoint not "
                f"saved, the previous one is kept. Lower the learning rates"
            )


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (BatchNorm) are copied."""
    for ema_param, param in zip(ema.parameters(), model.parameters(), strict=True):
        ema_param.lerp_(param.detach(), 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers(), strict=True):
        ema_buffer.copy_(buffer)


def ema_decay_at(decay: float, updates: int) -> float:
    """Warm-up of the EMA decay: early averages do not drag in the random initial weights."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


def adversarial_step(
    module: LightningModule,
    generator: nn.Module,
    discriminator: nn.Module,
    real: torch.Tensor,
    make_fake: Callable[[], torch.Tensor],
    loss: str,
    update_generator: bool,
    generator_extra_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    gan_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """One discriminator update and, when `update_generator`, one generator update.

    `module.optimizers()` must return (generator optimizer, discriminator optimizer).
    `make_fake()` draws a fresh batch of generated images in the discriminator's input range;
    `generator_extra_loss(fake)` adds terms to the generator loss (AdvGAN: attack + norm terms);
    `gan_weight` scales the generator's GAN term (AdvGAN's alpha).
    Returns detached statistics to log: losses, mean D logits on real/fake, gradient norms.
    """
    opt_g, opt_d = module.optimizers()
    stats: dict[str, torch.Tensor] = {}

    module.toggle_optimizer(opt_d)
    with torch.no_grad():
        fake = make_fake()
    # one forward for both halves: one spectral-norm power iteration per update, and faster
    real_logits, fake_logits = discriminator(torch.cat([real, fake])).split([len(real), len(fake)])
    loss_d = discriminator_loss(loss, real_logits, fake_logits)
    check_finite(module, "the discriminator loss", loss_d)
    opt_d.zero_grad(set_to_none=True)
    module.manual_backward(loss_d)
    stats["grad_norm_d"] = grad_norm(discriminator)
    opt_d.step()
    module.untoggle_optimizer(opt_d)
    stats.update(
        loss_d=loss_d.detach(),
        d_real=real_logits.detach().mean(),
        d_fake=fake_logits.detach().mean(),
    )
    if not update_generator:
        return stats

    module.toggle_optimizer(opt_g)
    fake = make_fake()
    loss_g = gan_weight * generator_loss(loss, discriminator(fake))
    if generator_extra_loss is not None:
        loss_g = loss_g + generator_extra_loss(fake)
    check_finite(module, "the generator loss", loss_g)
    opt_g.zero_grad(set_to_none=True)
    module.manual_backward(loss_g)
    stats["grad_norm_g"] = grad_norm(generator)
    opt_g.step()
    module.untoggle_optimizer(opt_g)
    stats["loss_g"] = loss_g.detach()
    return stats
