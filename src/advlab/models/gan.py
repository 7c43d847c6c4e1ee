"""GAN: a LightningModule that trains an image generator against a discriminator."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torchmetrics import MinMetric

from advlab.attacks.build import as_plain_dict
from advlab.errors import ConfigError
from advlab.models.gan_step import ema_average
from advlab.models.two_player import Batch, ConfigLike, TwoPlayerModule
from advlab.quality import QualityMetrics, build_quality_metrics
from advlab.utils.pylogger import get_logger

log = get_logger(__name__)

METRICS_DEFAULTS: dict[str, Any] = {
    "feature": "classifier",
    "feature_ckpt": None,
    "every_n_epochs": 1,
    "num_samples": 2000,
    "kid_subsets": 20,
    "kid_subset_size": 1000,
    "seed": 0,
}
SAMPLE_CHUNK = 500


class GAN(TwoPlayerModule):
    """An unconditional GAN: noise -> images, with an exponential moving average (EMA) of the
    generator for sampling. Training, checks and optimizers: `TwoPlayerModule`.

    The EMA is a `torch.optim.swa_utils.AveragedModel` (`generator_ema`) in the state_dict, so
    `GAN.load_from_checkpoint(path).sample(n)` samples from it and a resumed run continues it
    exactly. Images go in and come out of the module in [0, 1]; the networks work in [-1, 1].

    Args:
        generator, discriminator, optimizer_g, optimizer_d: see `TwoPlayerModule`; G is
            called with `latent_dim` too.
        image_shape, scheduler, loss, d_steps_per_g_step: see `TwoPlayerModule`.
        latent_dim: size of the noise vector.
        ema_decay: decay of the generator EMA used by `sample()` (0: no EMA, sample from G).
        metrics: FID/KID settings, see `METRICS_DEFAULTS` and configs/model/gan.yaml; without a
            feature extractor they are skipped.
        grid_size: images in the fixed-noise grid logged each epoch (`fixed_noise`).
        noise_seed: seed of the fixed noise.
    """

    checkpoint_hparams = ("generator", "discriminator", "latent_dim", "image_shape")

    def __init__(
        self,
        generator: ConfigLike,
        discriminator: ConfigLike,
        optimizer_g: ConfigLike,
        optimizer_d: ConfigLike,
        image_shape: Sequence[int] | None,
        scheduler: ConfigLike = None,
        loss: str = "bce",
        d_steps_per_g_step: int = 1,
        latent_dim: int = 128,
        ema_decay: float = 0.999,
        metrics: ConfigLike = None,
        grid_size: int = 64,
        noise_seed: int = 0,
    ) -> None:
        if not 0.0 <= ema_decay < 1.0:
            raise ConfigError(
                f"model.ema_decay={ema_decay} is outside [0, 1) (0 turns the EMA off)"
            )
        metrics_cfg = {**METRICS_DEFAULTS, **(as_plain_dict(metrics) if metrics else {})}
        unknown = set(metrics_cfg) - set(METRICS_DEFAULTS)
        if unknown:
            raise ConfigError(
                f"model.metrics has unknown keys {sorted(unknown)}; known: {sorted(METRICS_DEFAULTS)}"
            )
        super().__init__(
            generator, discriminator, optimizer_g, optimizer_d, image_shape, scheduler, loss,
            d_steps_per_g_step, latent_dim=latent_dim, ema_decay=ema_decay, metrics=metrics_cfg,
            grid_size=grid_size, noise_seed=noise_seed,
        )  # fmt: skip
        self.generator_ema: AveragedModel | None = None
        if ema_decay > 0:
            # use_buffers: BatchNorm statistics are averaged with the weights they belong to
            self.generator_ema = AveragedModel(
                self.generator, avg_fn=partial(ema_average, decay=ema_decay), use_buffers=True
            ).requires_grad_(False)
        noise = torch.Generator().manual_seed(noise_seed)
        self.register_buffer("fixed_noise", torch.randn(grid_size, latent_dim, generator=noise))
        self.val_fid_best = MinMetric()
        self._quality: QualityMetrics | None = None
        self._real_features_done = False
        self._evaluate_now = False

    # ---- the two-player hooks -----------------------------------------------------------------
    def generator_kwargs(self) -> dict[str, Any]:
        return {"latent_dim": self.hparams.latent_dim}

    def generator_probe(self, n: int) -> torch.Tensor:
        # a generator of its own: building a model leaves the global random state alone
        return torch.randn(n, self.hparams.latent_dim, generator=torch.Generator().manual_seed(0))

    def fake_images(self, batch: Batch) -> torch.Tensor:
        z = torch.randn(len(batch[0]), self.hparams.latent_dim, device=self.device)
        return self.generator(z)

    def on_generator_step(self) -> None:
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)

    def prepare_evaluation(self, datamodule: LightningDataModule | None) -> None:
        """Load the FID/KID feature extractor; without one the metrics are skipped."""
        cfg = self.hparams.metrics
        self._quality = build_quality_metrics(
            self.hparams.image_shape,
            feature=cfg["feature"],
            feature_ckpt=cfg["feature_ckpt"],
            kid_subsets=cfg["kid_subsets"],
            kid_subset_size=cfg["kid_subset_size"],
        )
        if self._quality is None:
            log.info(
                "GAN quality metrics (FID/KID) skipped: no feature extractor. Pass "
                "model.metrics.feature_ckpt=<a model=robust checkpoint, e.g. of "
                "experiment=mnist_clean> (or model.metrics.feature=inception, online)."
            )

    # ---- sampling -----------------------------------------------------------------------------
    @property
    def sampler(self) -> nn.Module:
        """The network `sample()` uses: the EMA generator when there is one."""
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Noise (N, latent_dim) -> images in [0, 1] from the sampling generator (differentiable)."""
        return (self.sampler(z) + 1) / 2

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] for the noise `z`, with the sampling generator in eval mode."""
        net = self.sampler
        was_training = net.training
        net.eval()
        try:
            images = torch.cat([net(chunk) for chunk in z.to(self.device).split(SAMPLE_CHUNK)])
        finally:
            net.train(was_training)
        return ((images + 1) / 2).clamp(0, 1)

    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """`n` images (n, C, H, W) as float in [0, 1]; the same `seed` gives the same images."""
        noise = torch.Generator().manual_seed(seed) if seed is not None else None
        return self.generate(torch.randn(n, self.hparams.latent_dim, generator=noise))

    # ---- quality metrics (validation) ---------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        every = self.hparams.metrics["every_n_epochs"]
        self._evaluate_now = (
            self._quality is not None
            and not self.trainer.sanity_checking
            and (self.current_epoch + 1) % every == 0
        )
        if self._evaluate_now:
            self._quality.to(self.device)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Real-image features of the validation split, once: the real images do not change."""
        if self._evaluate_now and not self._real_features_done:
            self._quality.update(batch[0], real=True)

    def on_validation_epoch_end(self) -> None:
        if not self._evaluate_now:
            return
        self._real_features_done = True
        cfg = self.hparams.metrics
        per_rank = math.ceil(cfg["num_samples"] / self.trainer.world_size)
        # the same noise at every evaluation: epochs differ by their weights, not their luck
        noise = torch.Generator().manual_seed(cfg["seed"] + self.global_rank)
        z = torch.randn(per_rank, self.hparams.latent_dim, generator=noise)
        for chunk in z.split(SAMPLE_CHUNK):
            self._quality.update(self.generate(chunk), real=False)
        values = self._quality.compute()
        self._quality.reset()
        self.val_fid_best(values["fid"])
        best = self.val_fid_best.compute()
        self.log("val/fid", values["fid"], prog_bar=True, sync_dist=True)
        self.log("val/kid", values["kid"], sync_dist=True)
        self.log("val/fid_best", best, sync_dist=True)
        # also in the text log: progress bars do not reach log files (SLURM, nohup)
        log.info(
            f"epoch {self.current_epoch}: FID {float(values['fid']):.2f}, "
            f"KID {float(values['kid']):.4f} (best FID {float(best):.2f})"
        )
