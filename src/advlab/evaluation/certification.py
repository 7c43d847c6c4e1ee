"""Certify a classifier's smoothed version on test batches: certified accuracy per L2 radius,
abstain rate, average certified radius, seconds per image, and optionally the smoothed
classifier's accuracy under an EOT-PGD attack at some radii (is the certificate tight?).

Config (`certify:` of `configs/eval.yaml`; `sigma: null` turns it off)::

    sigma: 0.25                  # the noise the base network was trained with
    n: 10000, n0: 100, alpha: 0.001, batch: 1000, seed: 0
    radii: [0.0, 0.25, 0.5, 0.75, 1.0]
    only: false                  # true: skip eval.py's attack suite, certify only
    attack: {radii: [], steps: 20, noise_draws: 8, n: 1000}
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from advlab.attacks.build import as_plain_dict
from advlab.attacks.smoothed_pgd import SmoothedPGD
from advlab.defences.smoothing import ABSTAIN, SmoothedClassifier, check_smoothing, radius_cap
from advlab.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]
#: progress(label, images done, images in all)
Progress = Callable[[str, int, int], None]
WHERE = "certify"


def _radii(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ConfigError(f"{where} must be a list of L2 radii, got {value!r}")
    for r in value:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r < 0:
            raise ConfigError(f"{where} must hold L2 radii >= 0, got {r!r}")
    return tuple(sorted(float(r) for r in value))


def _known_keys(cls: type, cfg: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(cfg) - {f.name for f in fields(cls)})
    if unknown:
        known = ", ".join(f.name for f in fields(cls))
        raise ConfigError(f"{where} has no knob {', '.join(unknown)}; its knobs: {known}")


@dataclass(frozen=True)
class AttackSettings:
    """EOT-PGD on the smoothed classifier (`SmoothedPGD`) at `radii`; each attacked image is
    judged by PREDICT with `n` draws (an abstention counts as broken)."""

    radii: tuple[float, ...] = ()
    steps: int = 20
    noise_draws: int = 8
    n: int = 1000

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, where: str) -> AttackSettings:
        cfg = dict(cfg or {})
        _known_keys(cls, cfg, where)
        settings = cls(**{**cfg, "radii": _radii(cfg.get("radii", ()), f"{where}.radii")})
        for name in ("steps", "noise_draws", "n"):
            value = getattr(settings, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where}.{name} must be an integer >= 1, got {value!r}")
        return settings


@dataclass(frozen=True)
class CertifySettings:
    """The `certify:` block of eval.py (see the module docstring)."""

    sigma: float
    n: int = 10_000
    n0: int = 100
    alpha: float = 0.001
    batch: int = 1000
    radii: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    seed: int = 0
    only: bool = False
    attack: AttackSettings = field(default_factory=AttackSettings)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | DictConfig | None) -> CertifySettings | None:
        """None when certification is off (`certify.sigma: null`); one line for a bad knob."""
        cfg = as_plain_dict(cfg) if cfg is not None else {}
        if cfg.get("sigma") is None:
            return None
        _known_keys(cls, cfg, WHERE)
        values = {**cfg, "attack": AttackSettings.from_config(cfg.get("attack"), f"{WHERE}.attack")}
        if "radii" in cfg:
            values["radii"] = _radii(cfg["radii"], f"{WHERE}.radii")
        settings = cls(**values)
        check_smoothing(settings.sigma, settings.n, settings.n0, settings.alpha, settings.batch,
                        WHERE)  # fmt: skip
        return settings

    @property
    def radius_cap(self) -> float:
        return radius_cap(self.n, self.alpha, self.sigma)

    def smoothed(
        self, model: nn.Module, num_classes: int, n: int | None = None
    ) -> SmoothedClassifier:
        return SmoothedClassifier(
            model, num_classes, self.sigma, n=n or self.n, n0=min(self.n0, n or self.n),
            alpha=self.alpha, batch=self.batch, seed=self.seed, where=WHERE,
        )  # fmt: skip


@dataclass
class CertificationResult:
    """Per-image certificates of the first images of the test split, and what they add up to."""

    settings: CertifySettings
    labels: torch.Tensor
    prediction: torch.Tensor
    radius: torch.Tensor
    p_lower: torch.Tensor
    seconds: torch.Tensor  # per image
    empirical: dict[float, float] = field(default_factory=dict)  # radius -> accuracy under attack
    requested: int | None = None  # images asked for, when interrupted before the last one

    @property
    def stopped_early(self) -> bool:
        return self.requested is not None and self.requested > self.num_samples

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    @property
    def correct(self) -> torch.Tensor:
        return self.prediction == self.labels

    def certified_accuracy(self, radius: float) -> float:
        """Share of images whose smoothed class is right and certified at `radius` or more."""
        return float((self.correct & (self.radius >= radius)).double().mean())

    @property
    def abstain_rate(self) -> float:
        return float((self.prediction == ABSTAIN).double().mean())

    @property
    def average_certified_radius(self) -> float:
        """ACR: the mean certified radius, 0 for wrong or abstained images."""
        return float((self.radius * self.correct).mean())

    @property
    def seconds_per_image(self) -> float:
        return float(self.seconds.mean())

    def as_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "sigma": s.sigma, "n": s.n, "n0": s.n0, "alpha": s.alpha, "seed": s.seed,
            "num_samples": self.num_samples,
            "requested_samples": self.requested or self.num_samples,
            "radius_cap": s.radius_cap,
            "certified_accuracy": {f"{r:g}": self.certified_accuracy(r) for r in s.radii},
            "abstain_rate": self.abstain_rate,
            "average_certified_radius": self.average_certified_radius,
            "seconds_per_image": self.seconds_per_image,
            "attack": {**asdict(s.attack), "accuracy": {f"{r:g}": a for r, a in self.empirical.items()}},
        }  # fmt: skip


def num_logits(model: nn.Module, batches: Sequence[Batch]) -> int:
    """The number of classes `model` votes among (its logits on one test image)."""
    with torch.no_grad():
        return int(model(batches[0][0][:1]).shape[1])


def certify_batches(
    model: nn.Module,
    batches: Sequence[Batch],
    settings: CertifySettings,
    progress: Progress | None = None,
) -> CertificationResult:
    """CERTIFY every image of `batches`, in groups that fill about one noise batch each.

    Ctrl-C (KeyboardInterrupt) stops a long run after the last finished group and returns the
    certificates so far (`stopped_early`; no attack then): hours of work are not lost.
    """
    smoothed = settings.smoothed(model, num_logits(model, batches))
    images = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches]).cpu()
    group = max(1, settings.batch // settings.n)
    parts: list[tuple[torch.Tensor, ...]] = []
    try:
        for start in range(0, len(images), group):
            begun = time.perf_counter()
            found = smoothed.certify(images[start : start + group])
            took = (time.perf_counter() - begun) / len(found.prediction)
            parts.append((*found, torch.full((len(found.prediction),), took, dtype=torch.float64)))
            if progress is not None:
                done = start + len(found.prediction)
                correct = (torch.cat([p[0] for p in parts]) == labels[:done]).double().mean()
                progress(f"certify sigma {settings.sigma:g}: {100 * correct:.1f}% right", done,
                         len(images))  # fmt: skip
    except KeyboardInterrupt:
        if not parts:
            raise
    prediction, radius, p_lower, seconds = (
        torch.cat(column) for column in zip(*parts, strict=True)
    )
    done = len(prediction)
    result = CertificationResult(settings, labels[:done], prediction, radius, p_lower, seconds)
    if done < len(images):
        result.requested = len(images)
    else:
        result.empirical = attack_smoothed(model, batches, settings, progress)
    return result


def attack_smoothed(
    model: nn.Module,
    batches: Sequence[Batch],
    settings: CertifySettings,
    progress: Progress | None = None,
) -> dict[float, float]:
    """Accuracy of the smoothed classifier (PREDICT, `attack.n` draws) on SmoothedPGD's examples
    at each of `attack.radii`: an upper bound on what any certificate at that radius can show."""
    plan = settings.attack
    if not plan.radii:
        return {}
    judge = settings.smoothed(model, num_logits(model, batches), n=plan.n)
    total = sum(len(y) for _, y in batches)
    accuracy = {}
    for radius in plan.radii:
        attack = SmoothedPGD(model, settings.sigma, radius, steps=plan.steps,
                             noise_draws=plan.noise_draws, seed=settings.seed)  # fmt: skip
        right, done = 0, 0
        for x, y in batches:
            answers = judge.predict(attack(x, y))
            right += int((answers == y.cpu()).sum())
            done += len(y)
            if progress is not None:
                progress(f"EOT-PGD L2 {radius:g} on the smoothed classifier", done, total)
        accuracy[radius] = right / total
    return accuracy
