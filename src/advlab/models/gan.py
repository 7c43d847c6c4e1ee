"""GAN: a LightningModule that trains an image generator against a discriminator, optionally
class-conditional (`num_classes`)."""

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
from advlab.checkpoints import GAN_HPARAMS, load_classifier_net
from advlab.errors import ConfigError
from advlab.models.gan_step import ema_average
from advlab.models.two_player import Batch, ConfigLike, TwoPlayerModule
from advlab.quality import ClassAgreement, QualityMetrics, build_quality_metrics
from advlab.utils.pylogger import get_logger

log = get_logger(__name__)

METRICS_DEFAULTS: dict[str, Any] = {
    "feature": "auto",
    "feature_ckpt": None,
    "every_n_epochs": 1,
    "num_samples": 2000,
    "kid_subsets": 20,
    "kid_subset_size": 1000,
    "seed": 0,
}
SAMPLE_CHUNK = 500


class GAN(TwoPlayerModule):
    """A GAN: noise (and, with `num_classes`, a class) -> images, with an exponential moving
    average (EMA) of the generator for sampling. Training, checks and optimizers:
    `TwoPlayerModule`.

    Conditional (`num_classes` set): G and D are built with `num_classes` (DCGAN networks then
    use conditional BatchNorm and a projection discriminator, Miyato & Koyama 2018), the fakes of
    each batch are drawn for the labels of its real images, and `sample(n, labels)` returns the
    labels beside the images.

    The EMA is a `torch.optim.swa_utils.AveragedModel` (`generator_ema`) in the state_dict, so
    `GAN.load_from_checkpoint(path).sample(n)` samples from it and a resumed run continues it
    exactly. Images go in and come out of the module in [0, 1]; the networks work in [-1, 1].

    Args:
        generator, discriminator, optimizer_g, optimizer_d: see `TwoPlayerModule`; G is
            called with `latent_dim` too.
        image_shape, scheduler, loss, d_steps_per_g_step: see `TwoPlayerModule`.
        latent_dim: size of the noise vector.
        ema_decay: decay of the generator EMA used by `sample()` (0: no EMA, sample from G).
        num_classes: classes to condition on (None: unconditional); the data's number of classes.
        metrics: FID/KID settings, see `METRICS_DEFAULTS` and configs/model/gan.yaml; without a
            feature extractor they are skipped. With `feature_ckpt`, a conditional GAN also logs
            the share of samples that classifier assigns to the requested class.
        grid_size: images in the fixed-noise grid logged each epoch (`fixed_noise`).
        noise_seed: seed of the fixed noise.
    """

    checkpoint_hparams = GAN_HPARAMS

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
        num_classes: int | None = None,
    ) -> None:
        if num_classes is not None and not (isinstance(num_classes, int) and num_classes >= 2):
            raise ConfigError(
                f"model.num_classes={num_classes!r} must be an integer >= 2 (a conditional GAN) "
                f"or null (unconditional)"
            )
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
            grid_size=grid_size, noise_seed=noise_seed, num_classes=num_classes,
        )  # fmt: skip
        self.generator_ema: AveragedModel | None = None
        if ema_decay > 0:
            # use_buffers: BatchNorm statistics are averaged with the weights they belong to
            self.generator_ema = AveragedModel(
                self.generator, avg_fn=partial(ema_average, decay=ema_decay), use_buffers=True
            ).requires_grad_(False)
        noise = torch.Generator().manual_seed(noise_seed)
        self.register_buffer("fixed_noise", torch.randn(grid_size, latent_dim, generator=noise))
        if num_classes is not None:  # only then: unconditional checkpoints keep their keys
            self.register_buffer("fixed_labels", torch.arange(grid_size) % num_classes)
        self.val_fid_best = MinMetric()
        self._quality: QualityMetrics | None = None
        self._classes: ClassAgreement | None = None
        self._real_features_done = False
        self._evaluate_now = False

    # ---- the two-player hooks -----------------------------------------------------------------
    @property
    def conditional(self) -> bool:
        return self.hparams.num_classes is not None

    def generator_kwargs(self) -> dict[str, Any]:
        return {"latent_dim": self.hparams.latent_dim, **self._classes_kwargs()}

    def discriminator_kwargs(self) -> dict[str, Any]:
        return self._classes_kwargs()

    def _classes_kwargs(self) -> dict[str, Any]:
        # unconditional networks are built as before: a network of one's own needs no new argument
        return {"num_classes": self.hparams.num_classes} if self.conditional else {}

    def conditioning(self, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (labels,) if self.conditional else ()

    def generator_probe(self, n: int) -> torch.Tensor:
        # a generator of its own: building a model leaves the global random state alone
        return torch.randn(n, self.hparams.latent_dim, generator=torch.Generator().manual_seed(0))

    def fake_images(self, batch: Batch) -> torch.Tensor:
        z = torch.randn(len(batch[0]), self.hparams.latent_dim, device=self.device)
        return self.generator(z, *self.conditioning(batch[1]))

    def on_generator_step(self) -> None:
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)

    def prepare_evaluation(self, datamodule: LightningDataModule | None) -> None:
        """Check the classes against the data's; load the FID/KID feature extractor and, for a
        conditional GAN, the classifier that judges its classes. One log line says what is used."""
        data_classes = getattr(datamodule, "num_classes", None)
        if (
            self.conditional
            and data_classes is not None
            and data_classes != self.hparams.num_classes
        ):
            raise ConfigError(
                f"model.num_classes={self.hparams.num_classes} but the data has {data_classes} "
                f"classes: leave it to the data config (num_classes: ${{data.num_classes}})"
            )
        cfg = self.hparams.metrics
        classifier = None
        if cfg["feature_ckpt"]:
            _, classifier = load_classifier_net(cfg["feature_ckpt"], "model.metrics.feature_ckpt")
        self._quality, line = build_quality_metrics(
            self.hparams.image_shape, cfg["feature"], classifier,
            kid_subsets=cfg["kid_subsets"], kid_subset_size=cfg["kid_subset_size"],
        )  # fmt: skip
        log.info(f"GAN quality: {line}")
        if self.conditional and classifier is not None:
            self._classes = ClassAgreement(classifier, self.hparams.num_classes)
        elif self.conditional:
            log.info("GAN per-class quality skipped: it needs model.metrics.feature_ckpt")

    # ---- sampling -----------------------------------------------------------------------------
    @property
    def sampler(self) -> nn.Module:
        """The network `sample()` uses: the EMA generator when there is one."""
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Noise (N, latent_dim) [+ labels (N,)] -> images in [0, 1] from the sampling generator
        (differentiable)."""
        return (self.sampler(z, *([] if labels is None else [labels])) + 1) / 2

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] for the noise `z` (and labels), with the sampling generator in eval
        mode."""
        net = self.sampler
        was_training = net.training
        net.eval()
        inputs = [t.to(self.device).split(SAMPLE_CHUNK) for t in (z, labels) if t is not None]
        try:
            images = torch.cat([net(*chunk) for chunk in zip(*inputs, strict=True)])
        finally:
            net.train(was_training)
        return ((images + 1) / 2).clamp(0, 1)

    def sample(
        self, n: int, labels: int | Sequence[int] | torch.Tensor | None = None,
        seed: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """`n` images (n, C, H, W) as float in [0, 1]; the same `seed` gives the same images.

        A conditional GAN returns `(images, labels)`: `labels` may be one class for all, n
        classes, or None for every class in turn (0, 1, ..., K-1, 0, ...).
        """
        noise = torch.Generator().manual_seed(seed) if seed is not None else None
        z = torch.randn(n, self.hparams.latent_dim, generator=noise)
        if not self.conditional:
            if labels is not None:
                raise ValueError("this GAN is unconditional (model.num_classes=null): no labels")
            return self.generate(z)
        if labels is None:
            labels = torch.arange(n) % self.hparams.num_classes
        labels = torch.as_tensor(labels, dtype=torch.long).expand(n).clone()
        if labels.min() < 0 or labels.max() >= self.hparams.num_classes:
            raise ValueError(f"labels must lie in [0, {self.hparams.num_classes}), got {labels}")
        return self.generate(z, labels), labels.to(self.device)

    # ---- quality metrics (validation) ---------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        every = self.hparams.metrics["every_n_epochs"]
        self._evaluate_now = (
            (self._quality is not None or self._classes is not None)
            and not self.trainer.sanity_checking
            and (self.current_epoch + 1) % every == 0
        )
        if self._evaluate_now:
            for metric in (self._quality, self._classes):
                if metric is not None:
                    metric.to(self.device)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Real-image features of the validation split, once: the real images do not change."""
        if self._evaluate_now and self._quality is not None and not self._real_features_done:
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
        labels = torch.arange(per_rank) % self.hparams.num_classes if self.conditional else None
        for start in range(0, per_rank, SAMPLE_CHUNK):
            chunk = None if labels is None else labels[start : start + SAMPLE_CHUNK]
            images = self.generate(z[start : start + SAMPLE_CHUNK], chunk)
            if self._quality is not None:
                self._quality.update(images, real=False)
            if self._classes is not None:
                self._classes.update(images, chunk.to(self.device))
        shown = []
        if self._quality is not None:
            shown.append(self._log_fid())
        if self._classes is not None:
            shown.append(self._log_class_agreement())
        # also in the text log: progress bars do not reach log files (SLURM, nohup)
        log.info(f"epoch {self.current_epoch}: {'; '.join(shown)}")

    def _log_fid(self) -> str:
        values = self._quality.compute()
        self._quality.reset()
        self.val_fid_best(values["fid"])
        best = self.val_fid_best.compute()
        self.log("val/fid", values["fid"], prog_bar=True, sync_dist=True)
        self.log("val/kid", values["kid"], sync_dist=True)
        self.log("val/fid_best", best, sync_dist=True)
        return (
            f"FID {float(values['fid']):.2f}, KID {float(values['kid']):.4f} "
            f"(best FID {float(best):.2f})"
        )

    def _log_class_agreement(self) -> str:
        values = self._classes.compute()
        self._classes.reset()
        self.log("val/class_acc", values["all"].float(), prog_bar=True, sync_dist=True)
        for label, share in enumerate(values["per_class"].float()):
            self.log(f"val/class_acc_{label}", share, sync_dist=True)
        shares = " ".join(f"{100 * float(v):.0f}" for v in values["per_class"])
        return (
            f"samples of the requested class {100 * float(values['all']):.1f}% "
            f"(per class, %: {shares})"
        )
