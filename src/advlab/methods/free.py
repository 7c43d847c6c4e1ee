"""Free adversarial training (Shafahi et al. 2019, "Adversarial Training for Free!")."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule

from advlab.attacks.build import attack_class
from advlab.attacks.free import FreePerturbation
from advlab.errors import ConfigError
from advlab.methods.base import TrainingMethod


class FreeAT(TrainingMethod):
    """Each batch is replayed `replays` times; every replay is one forward/backward pass on
    x + delta that gives both an optimizer step and a signed step of delta.

    delta is carried from replay to replay and on to the next batch, so over the replays it
    climbs the loss like a multi-step attack at the cost of clean training. The method steps
    the optimizer itself (manual optimization) and its per-step LR schedule counts replays.

    Args:
        attack: attack/free (`advlab.attacks.free.FreePerturbation`), which holds delta.
        replays: times each batch is replayed (optimizer steps per batch).
        eps_warmup_epochs: see `TrainingMethod`.
    """

    manual_optimization = True

    def __init__(
        self, attack: Mapping[str, Any], replays: int = 4, eps_warmup_epochs: float = 0.0
    ) -> None:
        super().__init__(attack, eps_warmup_epochs)
        cls = attack_class(self.attack_config)
        if not (cls is not None and issubclass(cls, FreePerturbation)):
            raise ConfigError(
                f"method=free needs attack/free as model.method.attack (it moves delta from the "
                f"training pass's own gradient), got {self.attack_config['_target_']}"
            )
        if isinstance(replays, bool) or not isinstance(replays, int) or replays < 1:
            raise ConfigError(f"model.method.replays must be an integer >= 1, got {replays!r}")
        self.replays = replays
        self._pending_delta: torch.Tensor | None = None

    def training_step(
        self, module: LightningModule, x: torch.Tensor, y: torch.Tensor, batch_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        perturbation: FreePerturbation = self.prepared_attack(module, batch_idx)
        optimizer = module.optimizers()
        per_step = module.hparams.scheduler_interval == "step"
        scheduler = module.lr_schedulers() if per_step else None
        for _ in range(self.replays):
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

    def optimizer_steps(self, batches: int, max_steps: int) -> int:
        """One step per replay. The Trainer checks `max_steps` only between batches, so a run
        capped by it ends on a whole batch of replays."""
        total = batches * self.replays
        if max_steps <= 0:  # Lightning: -1 when unset
            return total
        return min(total, math.ceil(max_steps / self.replays) * self.replays)

    def on_train_epoch_end(self, module: LightningModule) -> None:
        # under manual optimization Lightning leaves every scheduler step to the module
        if module.hparams.scheduler_interval == "epoch":
            scheduler = module.lr_schedulers()
            if scheduler is not None:
                scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        delta = getattr(self._attack, "delta", None)
        return {} if delta is None else {"delta": delta.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending_delta = state.get("delta")

    def prepared_attack(self, module: LightningModule, batch_idx: int) -> Any:
        attack = super().prepared_attack(module, batch_idx)
        if self._pending_delta is not None:  # a resumed run carries on with its perturbation
            attack.delta = self._pending_delta.to(module.device)
            self._pending_delta = None
        return attack
