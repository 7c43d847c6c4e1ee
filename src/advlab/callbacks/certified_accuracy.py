"""Approximate certified accuracy of the smoothed classifier while it trains."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from lightning.pytorch import LightningModule, Trainer

from advlab.callbacks.validation_share import ValidationShareCallback
from advlab.defences.smoothing import ABSTAIN, SmoothedClassifier, check_smoothing
from advlab.errors import ConfigError
from advlab.utils import get_logger

log = get_logger(__name__)
WHERE = "callbacks.certified_accuracy"


class ApproximateCertifiedAccuracy(ValidationShareCallback):
    """Every N epochs (and after the last), CERTIFY the first `num_samples` validation images with
    a small `n` and log the share certified correct at each radius, as
    `<prefix>/acc_r<radius>`, plus `<prefix>/abstain_rate`, `<prefix>/acr` (average certified
    radius), `<prefix>/radius_cap` and `<prefix>/seconds`.

    APPROXIMATE, hence the prefix: few images, and a small n both loosens every bound and caps
    the radius (sigma * Phi^-1(alpha^(1/n)): radii above `radius_cap` always read 0). It shows
    the trend; `python eval.py certify.sigma=...` gives the numbers to report.

    The images are taken from the validation batches as they pass; under DDP each rank certifies
    its share (rank r holds items r, r + W, ...) and the counts are summed. The noise comes from
    a generator reseeded every time, so every epoch sees the same draws and training's random
    state is untouched.

    Args:
        sigma: noise level; null takes the training method's `sigma` (model.method.sigma).
        radii: L2 radii to report.
        every_n_epochs: certify after every N-th epoch's validation (and after the last epoch).
        num_samples: validation images certified.
        n, n0, alpha, batch: CERTIFY's settings (see `advlab.defences.SmoothedClassifier`).
        seed: seed of the noise.
        prefix: metric-name prefix.
    """

    def __init__(
        self,
        sigma: float | None = None,
        radii: Sequence[float] = (0.0, 0.25, 0.5, 0.75),
        every_n_epochs: int = 5,
        num_samples: int = 100,
        n: int = 500,
        n0: int = 32,
        alpha: float = 0.001,
        batch: int = 1000,
        seed: int = 0,
        prefix: str = "cert_approx",
    ) -> None:
        super().__init__(num_samples)
        for name, value in (("every_n_epochs", every_n_epochs), ("num_samples", num_samples)):
            if value < 1:
                raise ConfigError(f"{WHERE}.{name} must be >= 1, got {value}")
        check_smoothing(sigma if sigma is not None else 1.0, n, n0, alpha, batch, WHERE)
        self.sigma = sigma
        self.radii = tuple(sorted(float(r) for r in radii))
        self.every_n_epochs = every_n_epochs
        self.n, self.n0, self.alpha, self.batch, self.seed = n, n0, alpha, batch, seed
        self.prefix = prefix

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.sigma is None:
            sigma = getattr(getattr(pl_module, "method", None), "sigma", None)
            if sigma is None:
                raise ConfigError(
                    f"{WHERE}.sigma is null and the model's training method has no sigma: set "
                    f"{WHERE}.sigma (the noise to certify under)"
                )
            self.sigma = float(sigma)

    def _due(self, trainer: Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        return not trainer.sanity_checking and (epoch % self.every_n_epochs == 0 or last)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        kept = self.kept() if self._due(trainer) else None
        if kept is None:
            return
        start = time.perf_counter()
        assert self.sigma is not None
        x, y = kept[0], kept[1].cpu()
        with torch.inference_mode(False):
            with torch.no_grad():
                num_classes = int(pl_module(x[:1]).shape[1])
            smoothed = SmoothedClassifier(
                pl_module, num_classes, self.sigma, n=self.n, n0=self.n0, alpha=self.alpha,
                batch=self.batch, seed=self.seed + trainer.global_rank, where=WHERE,
            )  # fmt: skip
            found = smoothed.certify(x)
        correct = found.prediction == y
        local = [float((correct & (found.radius >= r)).sum()) for r in self.radii]
        local += [float((found.prediction == ABSTAIN).sum()), float((found.radius * correct).sum()),
                  float(len(y))]  # fmt: skip
        summed = trainer.strategy.all_gather(torch.tensor(local, device=pl_module.device))
        totals = summed.view(-1, len(local)).sum(dim=0).tolist()
        count = max(totals[-1], 1.0)
        metrics = {f"{self.prefix}/acc_r{r:g}": totals[i] / count for i, r in enumerate(self.radii)}
        metrics[f"{self.prefix}/abstain_rate"] = totals[-3] / count
        metrics[f"{self.prefix}/acr"] = totals[-2] / count
        metrics[f"{self.prefix}/radius_cap"] = smoothed.radius_cap
        metrics[f"{self.prefix}/seconds"] = time.perf_counter() - start
        pl_module.log_dict(metrics, sync_dist=True)  # every rank holds the summed numbers
        shown = ", ".join(f"{100 * metrics[f'{self.prefix}/acc_r{r:g}']:.1f}% at {r:g}"
                          for r in self.radii)  # fmt: skip
        log.info(
            f"APPROXIMATE certified accuracy, epoch {trainer.current_epoch} ({int(count)} val "
            f"images, n={self.n}, sigma {self.sigma:g}; no radius above "
            f"{smoothed.radius_cap:.3f} can be certified with this n): {shown}"
        )
