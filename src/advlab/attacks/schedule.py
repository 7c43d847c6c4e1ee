"""Epsilon warm-up: grow an attack's budget (and step size) linearly over the first epochs."""

from __future__ import annotations

from typing import Any

from advlab.errors import ConfigError

BUDGET_ATTRIBUTES = ("eps", "alpha")


class EpsilonSchedule:
    """Scales `eps` and `alpha` of a torchattacks attack by min(1, progress / warmup_epochs).

    Starting adversarial training at full budget stalls small networks on MNIST at eps 0.3;
    a short ramp is the standard fix. `progress` is fractional epochs, so the ramp is per step.
    """

    def __init__(self, attack: Any, warmup_epochs: float) -> None:
        if warmup_epochs < 0:
            raise ConfigError(f"model.eps_warmup_epochs must be >= 0, got {warmup_epochs}")
        self.attack = attack
        self.warmup_epochs = warmup_epochs
        self.base = {
            name: getattr(attack, name) for name in BUDGET_ATTRIBUTES if hasattr(attack, name)
        }

    def factor(self, progress_epochs: float) -> float:
        if self.warmup_epochs == 0:
            return 1.0
        return min(1.0, max(progress_epochs, 0.0) / self.warmup_epochs)

    def update(self, progress_epochs: float) -> float:
        """Set the attack's budget for this point of training; returns the factor used."""
        factor = self.factor(progress_epochs)
        for name, value in self.base.items():
            setattr(self.attack, name, value * factor)
        return factor
