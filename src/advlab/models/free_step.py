"""One batch of free adversarial training (Shafahi et al. 2019), under manual optimization.

Kept apart from `RobustClassifier` because it owns the optimizer loop: free AT takes
`replays` optimizer steps per batch, each from the one forward/backward pass that also moves
the perturbation (`advlab.attacks.free.FreePerturbation`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule

from advlab.attacks.free import FreePerturbation


def free_adversarial_step(
    module: LightningModule,
    perturbation: FreePerturbation,
    x: torch.Tensor,
    y: torch.Tensor,
    replays: int,
    step_scheduler: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replay (x, y) `replays` times; returns the last replay's loss and logits (detached).

    Each replay: logits on x + delta, one backward pass that fills the weights' gradients and
    the input gradient, one optimizer step, one signed step of delta. `step_scheduler` steps the
    LR scheduler after every optimizer step (a per-step schedule counts replays, not batches).
    """
    optimizer = module.optimizers()
    scheduler = module.lr_schedulers() if step_scheduler else None
    for _ in range(replays):
        x_adv = perturbation(x, y).requires_grad_(True)
        logits = module(x_adv)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        module.manual_backward(loss)
        perturbation.step(x, x_adv, x_adv.grad)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return loss.detach(), logits.detach()
