"""What every training method shares: its training attack, built lazily, and the budget warm-up.

A method is one class (one file) with its own knobs, their checks and its training step. Config
(`configs/method/<name>.yaml`, mounted at `model.method`)::

    _target_: advlab.methods.TRADES
    beta: 6.0
    attack: <an attack/ config>     # the inner maximization; absent for `clean`

`build_method` checks the knobs against the class's signature, so a misspelled one is an error.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import hydra
import torch
from lightning.pytorch import LightningModule
from omegaconf import DictConfig
from torch import nn

from advlab.attacks import EpsilonSchedule, build_attack
from advlab.attacks.build import as_plain_dict, validate_attack_config
from advlab.errors import ConfigError

Attack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
WHERE = "model.method"


class TrainingMethod:
    """Base of the training methods: `training_step(module, x, y, batch_idx) -> (loss, logits)`.

    Subclasses that train on a loss implement `loss(net, attack, x, y)`; the module's automatic
    optimization then steps the optimizer. Methods that step it themselves (free AT) set
    `manual_optimization` and override `training_step`.

    Args:
        attack: attack config of the inner maximization (an `attack/` config); required unless
            the class sets `needs_attack = False`.
        eps_warmup_epochs: epochs over which the training attack's budget (eps and step size)
            grows linearly from 0: small networks stall when attacked at the full budget from
            the first step.
    """

    #: the method steps the optimizer itself (Lightning's manual optimization)
    manual_optimization: ClassVar[bool] = False
    #: the method trains against an attack
    needs_attack: ClassVar[bool] = True

    def __init__(self, attack: Mapping[str, Any] | None = None, eps_warmup_epochs: float = 0.0):
        name = type(self).__name__
        if self.needs_attack and attack is None:
            raise ConfigError(f"{WHERE} ({name}) needs an attack: {WHERE}.attack=<attack config>")
        if not self.needs_attack and attack is not None:
            raise ConfigError(f"{WHERE} ({name}) trains without an attack; remove {WHERE}.attack")
        if eps_warmup_epochs < 0:
            raise ConfigError(f"{WHERE}.eps_warmup_epochs must be >= 0, got {eps_warmup_epochs}")
        self.attack_config = (
            None
            if attack is None
            else validate_attack_config(attack, where=f"{WHERE}.attack", training=True)
        )
        self.eps_warmup_epochs = float(eps_warmup_epochs)
        self._attack: Any = None
        self._attack_device: torch.device | None = None
        self._warmup: EpsilonSchedule | None = None

    # ---- the training attack ----------------------------------------------------------------------
    def attack(self, net: nn.Module) -> Any:
        """The training attack against `net`, rebuilt when `net` moves to another device
        (torchattacks reads the model's device when it is constructed)."""
        if self.attack_config is None:
            return None
        device = next(net.parameters()).device
        if self._attack is None or device != self._attack_device:
            self._attack = build_attack(
                self.attack_config, net, where=f"{WHERE}.attack", training=True
            )
            self._attack_device = device
            self._warmup = EpsilonSchedule(self._attack, self.eps_warmup_epochs)
        return self._attack

    def prepared_attack(self, module: LightningModule, batch_idx: int) -> Any:
        """The attack with its budget set for this point of training (logged while it grows)."""
        attack = self.attack(module.net)
        if self._warmup is not None and self.eps_warmup_epochs > 0:
            batches = max(module.trainer.num_training_batches, 1)
            # not batch_idx: after a mid-epoch resume it restarts at 0; the loop's count does not
            done = module.trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1
            factor = self._warmup.update(module.current_epoch + done / batches)
            module.log("train/eps_factor", factor, on_step=True, on_epoch=False)
        return attack

    # ---- training ---------------------------------------------------------------------------------
    def loss(
        self, net: nn.Module, attack: Any, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to minimize, logits training accuracy is measured on)."""
        raise NotImplementedError

    def training_step(
        self, module: LightningModule, x: torch.Tensor, y: torch.Tensor, batch_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss(module.net, self.prepared_attack(module, batch_idx), x, y)

    def optimizer_steps(self, batches: int, max_steps: int) -> int:
        """Optimizer steps of a run of `batches` training batches (for OneCycleLR's total)."""
        return batches

    def on_train_epoch_end(self, module: LightningModule) -> None:
        """Per-epoch work of methods that drive their own optimizer."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue exactly (stored in the checkpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(attack={self.attack_config and self.attack_config['_target_']})"
        )


def build_method(cfg: Mapping[str, Any] | DictConfig | None) -> TrainingMethod:
    """The method of `cfg`; one line for a missing target, a wrong class or an unknown knob."""
    if cfg is None:
        raise ConfigError(f"{WHERE} is required, e.g. method=pgd (see configs/method/)")
    cfg = as_plain_dict(cfg)
    target = cfg.pop("_target_", None)
    try:
        cls = hydra.utils.get_class(str(target))
    except Exception:
        raise ConfigError(
            f"{WHERE}._target_={target!r} is not a class (e.g. advlab.methods.PGDAT)"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, TrainingMethod)):
        raise ConfigError(f"{WHERE}._target_={target} is not an advlab.methods.TrainingMethod")
    parameters = inspect.signature(cls).parameters
    knobs = list(parameters)
    missing = [n for n, p in parameters.items() if p.default is p.empty and n not in cfg]
    if missing:
        raise ConfigError(
            f"{WHERE} ({cls.__name__}) needs {', '.join(missing)}: set {WHERE}.{missing[0]}"
        )
    unknown = sorted(set(cfg) - set(knobs))
    if unknown:
        raise ConfigError(
            f"{WHERE} ({cls.__name__}) has no knob {', '.join(unknown)}; its knobs: "
            f"{', '.join(knobs)}"
        )
    return cls(**cfg)
