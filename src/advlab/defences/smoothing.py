"""Randomized smoothing (Cohen, Rosenfeld and Kolter 2019, "Certified Adversarial Robustness via
Randomized Smoothing"): PREDICT and CERTIFY for any classifier.

The smoothed classifier g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c) of a base classifier f is
robust in L2: if class A wins with probability p_A >= 1/2, no perturbation smaller than
sigma * Phi^-1(p_A) changes g(x). p_A is estimated by Monte Carlo, so every answer holds with
probability 1 - alpha over the noise, and the radius a finite `n` can certify is capped: with all
n draws voting for A, p_A's lower bound is alpha^(1/n) (about 3.2 sigma at n = 10,000).

Distance Measure: L2, in pixel units of [0, 1] images (noise is added before the network's own
normalization, and not clipped, as in the paper). Knows nothing of Hydra or Lightning.

Example::

    smoothed = SmoothedClassifier(net, num_classes=10, sigma=0.25, n=10_000)
    prediction, radius, _ = smoothed.certify(images)   # ABSTAIN (-1) where it cannot certify
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from scipy.stats import binomtest, norm
from torch import nn

from advlab.errors import ConfigError

#: the class PREDICT and CERTIFY answer when the vote does not allow an answer
ABSTAIN = -1


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion."""
    test = binomtest(successes, trials, alternative="greater")
    return float(test.proportion_ci(confidence_level=1 - alpha, method="exact").low)


def certified_radius(p_lower: float, sigma: float) -> float:
    """The L2 radius sigma * Phi^-1(p_lower) that a top-class probability >= p_lower proves."""
    return float(sigma * norm.ppf(p_lower))


def radius_cap(n: int, alpha: float, sigma: float) -> float:
    """The largest radius `n` draws can certify: all of them voting for one class."""
    return certified_radius(lower_confidence_bound(n, n, alpha), sigma)


def vote_is_significant(top: int, runner_up: int, alpha: float) -> bool:
    """Whether the top class beats the runner-up at level alpha (two-sided binomial test): the
    condition under which PREDICT answers instead of abstaining."""
    return float(binomtest(top, top + runner_up, p=0.5).pvalue) <= alpha


def check_smoothing(
    sigma: float, n: int, n0: int, alpha: float, batch: int, where: str = "smoothing"
) -> None:
    """One line for a knob that cannot work, naming it as `<where>.<knob>`."""

    def number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not (number(sigma) and math.isfinite(sigma) and sigma > 0):
        raise ConfigError(
            f"{where}.sigma must be > 0 (the noise's standard deviation), got {sigma}"
        )
    for name, value in (("n", n), ("n0", n0), ("batch", batch)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ConfigError(f"{where}.{name} must be an integer >= 1, got {value}")
    if n0 > n:
        raise ConfigError(
            f"{where}.n0={n0} > {where}.n={n}: the selection draws (n0) are a few, the "
            f"estimation draws (n) many"
        )
    if not (number(alpha) and 0 < alpha < 1):
        raise ConfigError(f"{where}.alpha must be in (0, 1) (the failure probability), got {alpha}")
    if alpha ** (1 / n) < 0.5:  # the bound of a unanimous vote: below 1/2 nothing certifies
        raise ConfigError(
            f"{where}.n={n} is too small to certify anything at alpha={alpha:g}: even a "
            f"unanimous vote bounds the top class's probability below 1/2"
        )


class Certificates(NamedTuple):
    """Per image: the smoothed class (ABSTAIN or a class), the certified L2 radius (0 when
    abstaining) and the lower confidence bound on the top class's probability."""

    prediction: torch.Tensor
    radius: torch.Tensor
    p_lower: torch.Tensor


class SmoothedClassifier:
    """The smoothed version of `base` (any nn.Module returning logits for [0, 1] images).

    Noise is drawn in batches of `batch` on the base's device from the classifier's own
    torch.Generator, so results are reproducible under `seed` and drawing them changes no other
    random state. The base runs in eval mode (its mode is restored after) without gradients.

    Args:
        base: the base classifier f.
        num_classes: number of logits of `base`.
        sigma: standard deviation of the Gaussian noise (pixel units of [0, 1] images).
        n: estimation draws of CERTIFY and PREDICT (the radius cap grows with it).
        n0: selection draws of CERTIFY (they pick the class whose probability n bounds).
        alpha: failure probability of every answer.
        batch: noisy copies per forward pass of `base`.
        seed: seed of the noise.
        where: config path named by the errors (e.g. `certify`).
    """

    def __init__(
        self,
        base: nn.Module,
        num_classes: int,
        sigma: float,
        n: int = 100_000,
        n0: int = 100,
        alpha: float = 0.001,
        batch: int = 1000,
        seed: int = 0,
        where: str = "smoothing",
    ) -> None:
        check_smoothing(sigma, n, n0, alpha, batch, where)
        if num_classes < 2:
            raise ConfigError(f"{where}: a vote needs at least 2 classes, got {num_classes}")
        self.base = base
        self.num_classes = int(num_classes)
        self.sigma = float(sigma)
        self.n, self.n0, self.alpha, self.batch = n, n0, float(alpha), batch
        self.seed, self.where = seed, where
        self.generator: torch.Generator | None = None

    @property
    def device(self) -> torch.device:
        parameter = next(self.base.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    @property
    def radius_cap(self) -> float:
        """The largest radius CERTIFY can return with these `n` and `alpha`."""
        return radius_cap(self.n, self.alpha, self.sigma)

    def reseed(self, seed: int | None = None) -> None:
        """Start the noise over from `seed` (default: the constructor's)."""
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed if seed is None else seed)

    def _generator(self) -> torch.Generator:
        if self.generator is None or self.generator.device != self.device:
            self.reseed()
        assert self.generator is not None
        return self.generator

    # ---- Monte Carlo --------------------------------------------------------------------------
    def counts(self, x: torch.Tensor, num: int) -> torch.Tensor:
        """Votes of `base` per class over `num` noisy copies of each image: (B, num_classes).

        Copies of several images share a forward pass, so small `num` still fills `batch`.
        """
        x = x.to(self.device)
        images = len(x)
        votes = torch.zeros(images * self.num_classes, dtype=torch.long, device=self.device)
        generator = self._generator()
        was_training = self.base.training
        self.base.eval()
        try:
            with torch.no_grad():
                for start in range(0, images * num, self.batch):
                    rows = torch.arange(
                        start, min(start + self.batch, images * num), device=self.device
                    )
                    owner = rows // num
                    clean = x[owner]
                    noise = torch.randn(
                        clean.shape, generator=generator, device=self.device, dtype=clean.dtype
                    )
                    logits = self.base(clean + self.sigma * noise)
                    if logits.shape[1] != self.num_classes:  # votes would land on other images
                        raise ConfigError(
                            f"{self.where}: the base classifier returns {logits.shape[1]} logits, "
                            f"not num_classes={self.num_classes}"
                        )
                    labels = logits.argmax(dim=1)
                    votes += torch.bincount(owner * self.num_classes + labels, minlength=len(votes))
        finally:
            self.base.train(was_training)
        return votes.view(images, self.num_classes)

    # ---- Cohen et al.'s PREDICT and CERTIFY ---------------------------------------------------
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """PREDICT: the top class of `n` draws, or ABSTAIN when it does not beat the runner-up
        significantly (then the answer would be wrong with probability above alpha); on the CPU."""
        top2 = self.counts(x, self.n).topk(2, dim=1)
        answers = [
            int(cls[0]) if vote_is_significant(int(v[0]), int(v[1]), self.alpha) else ABSTAIN
            for v, cls in zip(top2.values.tolist(), top2.indices, strict=True)
        ]
        return torch.tensor(answers, dtype=torch.long)

    def certify(self, x: torch.Tensor) -> Certificates:
        """CERTIFY: the class of `n0` draws; the lower bound of its probability from `n` fresh
        draws; the radius it proves, or ABSTAIN when that bound is below 1/2; on the CPU."""
        guess = self.counts(x, self.n0).argmax(dim=1)
        hits = self.counts(x, self.n).gather(1, guess[:, None]).squeeze(1).tolist()
        p_lower = [lower_confidence_bound(k, self.n, self.alpha) for k in hits]
        radius = [certified_radius(p, self.sigma) if p >= 0.5 else 0.0 for p in p_lower]
        prediction = [
            int(c) if p >= 0.5 else ABSTAIN for c, p in zip(guess.tolist(), p_lower, strict=True)
        ]
        return Certificates(
            torch.tensor(prediction, dtype=torch.long),
            torch.tensor(radius, dtype=torch.float64),
            torch.tensor(p_lower, dtype=torch.float64),
        )
