"""The official AutoAttack (Croce & Hein 2020, PyPI `pyautoattack`) behind the torchattacks contract.

torchattacks ships its own AutoAttack with 10 steps per attack; headline numbers should come from
the authors' code, which runs 100. This wrapper makes it one more `attack(x, y) -> x_adv` that
`build_attack` can instantiate from an `attack/` config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from pyautoattack import AutoAttack
from torch import nn

from advlab.errors import ConfigError

VERSIONS = ("standard", "custom", "plus", "rand")
ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
STANDARD_STEPS = 100
STANDARD_QUERIES = 5000
MAX_TARGET_CLASSES = 9

log = logging.getLogger(__name__)


class OfficialAutoAttack:
    """`OfficialAutoAttack(model, eps=0.3)(x, y)` runs `pyautoattack.AutoAttack` and returns x_adv.

    Points the ensemble cannot break come back unchanged, as in `run_standard_evaluation`.

    Args:
        model: takes images in [0, 1], returns logits; attacked in eval mode, mode restored after.
        norm: `Linf` or `L2` (pixel units of [0, 1] images).
        eps: the budget.
        version: `standard` (APGD-CE, APGD-T, FAB-T, Square) or `custom` with `attacks`.
        attacks: the attacks of a `custom` run, e.g. `[apgd-ce, apgd-t]`; run with the standard
            settings (1 restart, 9 target classes, 5000 Square queries).
        seed: seed of every attack's random start, for reproducible numbers.
        batch_size: images per forward/backward pass inside AutoAttack.
        steps: APGD/FAB iterations. 100 is AutoAttack's; fewer is no longer AutoAttack (tests).
        n_queries: Square queries. 5000 is AutoAttack's.
        verbose: let AutoAttack's progress lines through its `auto-attack` logger.

    After a call, `warnings` holds what AutoAttack flagged (randomness, probabilities, zero
    gradients, Square beating the white-box attacks): the evaluation turns each into a check.
    Set `progress` to a callable(label, done, total) to follow each stage batch by batch.
    """

    def __init__(
        self,
        model: nn.Module,
        norm: str = "Linf",
        eps: float = 0.3,
        version: str = "standard",
        attacks: Sequence[str] | None = None,
        seed: int | None = 0,
        batch_size: int = 500,
        steps: int = STANDARD_STEPS,
        n_queries: int = STANDARD_QUERIES,
        verbose: bool = False,
    ) -> None:
        if version not in VERSIONS:
            raise ConfigError(f"attack.version={version!r} is not one of {', '.join(VERSIONS)}")
        if version == "custom":
            if not attacks:
                raise ConfigError(
                    "attack.version=custom needs attack.attacks, e.g. [apgd-ce, apgd-t]"
                )
            unknown = [name for name in attacks if name not in ATTACKS]
            if unknown:
                raise ConfigError(
                    f"attack.attacks: unknown {unknown}; AutoAttack has {', '.join(ATTACKS)}"
                )
        elif attacks:
            raise ConfigError(f"attack.attacks is only used with version=custom (got {version})")
        if norm not in ("Linf", "L2"):
            raise ConfigError(f"attack.norm={norm!r} is not one of Linf, L2")
        self.model = model
        self.norm = norm
        self.eps = float(eps)
        self.version = version
        self.attacks = list(attacks) if attacks else None
        self.seed = seed
        self.batch_size = batch_size
        self.steps = steps
        self.n_queries = n_queries
        self.verbose = verbose
        self.warnings: list[str] = []
        self.progress: Callable[[str, int, int], None] | None = None

    def __repr__(self) -> str:
        which = "+".join(self.attacks) if self.attacks else self.version
        return f"OfficialAutoAttack({which}, {self.norm}, eps={self.eps:g})"

    def _device(self) -> torch.device:
        first = next(self.model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def _build(self, num_classes: int) -> AutoAttack:
        attack = AutoAttack(
            self.model,
            norm=self.norm,
            eps=self.eps,
            version=self.version,
            attacks=self.attacks,
            seed=self.seed,
            device=self._device(),
        )
        attack.verbose = self.verbose
        targets = min(MAX_TARGET_CLASSES, num_classes - 1)
        if self.version == "custom":  # what _set_version("standard") sets, for any subset
            attack.apgd.n_restarts = 1
            attack.apgd_targeted.n_restarts = 1
            attack.fab.n_restarts = 1
            attack.square.n_queries = STANDARD_QUERIES
        attack.apgd_targeted.n_target_classes = targets
        attack.fab.n_target_classes = targets
        if self.steps != STANDARD_STEPS or self.n_queries != STANDARD_QUERIES:
            for apgd in (attack.apgd, attack.apgd_targeted):
                _set_apgd_iterations(apgd, self.steps)
            attack.fab.n_iter = self.steps
            attack.square.n_queries = self.n_queries
            log.warning(
                f"AutoAttack with steps={self.steps}, n_queries={self.n_queries}: not the "
                f"published setting ({STANDARD_STEPS}, {STANDARD_QUERIES}); do not report it as such"
            )
        return attack

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        collector = _WarningCollector()
        try:
            with torch.no_grad():
                num_classes = self.model(images[:1]).shape[1]
            attack = self._build(num_classes)
            # AutoAttack reports progress at DEBUG; warnings (e.g. zero gradients) always pass
            attack.logger.setLevel(logging.DEBUG if self.verbose else logging.WARNING)
            attack.logger.addHandler(collector)
            x_adv = self._run_stages(attack, images.detach(), labels)
        finally:
            attack_logger = logging.getLogger("auto-attack")
            attack_logger.removeHandler(collector)
            self.model.train(was_training)
        self.warnings = list(dict.fromkeys(self.warnings + collector.messages))
        return x_adv.detach()

    def _run_stages(
        self, attack: AutoAttack, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """AutoAttack's own loop, one stage at a time over the points still robust, in batches:
        the same attacks and seeds as `run_standard_evaluation`, with progress per batch."""
        stages = list(attack.attacks_to_run)
        with torch.no_grad():
            robust = self.model(images).argmax(dim=1) == labels
        x_adv = images.clone()
        for stage in stages:
            index = robust.nonzero().flatten()
            if len(index) == 0:  # nothing left to attack, as AutoAttack stops
                break
            chunks = index.split(self.batch_size)
            for done, chunk in enumerate(chunks, 1):
                attack.attacks_to_run = [stage]
                adv, _ = attack.run_standard_evaluation(
                    images[chunk], labels[chunk], batch_size=len(chunk)
                )
                with torch.no_grad():
                    fooled = self.model(adv).argmax(dim=1) != labels[chunk]
                x_adv[chunk[fooled]] = adv[fooled]
                robust[chunk[fooled]] = False
                if self.progress is not None:
                    self.progress(stage, done, len(chunks))
        attack.attacks_to_run = stages
        return x_adv


class _WarningCollector(logging.Handler):
    """Keeps the messages AutoAttack logs at WARNING, so they reach the report."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().split(" See flags_doc.md")[0]
        if message not in self.messages:
            self.messages.append(message)


def _set_apgd_iterations(apgd: object, steps: int) -> None:
    """APGD derives its step-size schedule from n_iter in __init__: set all of it together."""
    apgd.n_iter = apgd.n_iter_orig = steps
    apgd.n_iter_2 = max(int(0.22 * steps), 1)
    apgd.n_iter_min = max(int(0.06 * steps), 1)
    apgd.size_decr = max(int(0.03 * steps), 1)
