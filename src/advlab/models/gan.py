"""GAN: a LightningModule that trains an image generator against a discriminator."""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import hydra
import torch
from lightning.pytorch import LightningDataModule, LightningModule
from omegaconf import DictConfig
from torch import nn
from torchmetrics import MeanMetric, MinMetric

from advlab.attacks.build import as_plain_dict
from advlab.checkpoints import SafeCheckpointLoading
from advlab.errors import ConfigError
from advlab.models.gan_step import (
    GAN_LOSSES,
    adversarial_step,
    ema_decay_at,
    refuse_non_finite_weights,
    update_ema,
)
from advlab.quality import QualityMetrics, build_quality_metrics
from advlab.utils.pylogger import get_logger

log = get_logger(__name__)

ConfigLike = Mapping[str, Any] | DictConfig | None

STATS = ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g")
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


class GAN(SafeCheckpointLoading, LightningModule):
    """An unconditional GAN with manual optimization: one D update per batch, one G update every
    `d_steps_per_g_step` batches, and an exponential moving average (EMA) of G for sampling.

    The networks are sized from the data (`image_shape`, filled in from the DataModule's `dims`
    before training) and stored with plain-dict configs in the checkpoint, so
    `GAN.load_from_checkpoint(path).sample(n)` needs nothing else. Images go in and come out of
    the module in [0, 1]; the networks work in [-1, 1] (tanh).

    Args:
        generator: config (`_target_` + arguments) of a generator from `advlab.nets`; it is
            called with `latent_dim` and `image_shape` added.
        discriminator: config of a discriminator from `advlab.nets`, called with `image_shape`.
        optimizer_g, optimizer_d: `_partial_` optimizer configs for G and D.
        scheduler: optional `_partial_` LR scheduler config applied to both optimizers and
            stepped with them; `total_iters` (e.g. PolynomialLR: linear decay to 0) is filled in
            with each optimizer's number of steps in the run.
        latent_dim: size of the noise vector.
        image_shape: (C, H, W) of the images; None means "from the data".
        loss: `bce` (non-saturating) or `hinge`.
        d_steps_per_g_step: discriminator updates per generator update.
        ema_decay: decay of the generator EMA used by `sample()` (0: no EMA, sample from G).
        metrics: FID/KID settings, see `METRICS_DEFAULTS` and configs/model/gan.yaml; without a
            feature extractor they are skipped.
        grid_size: images in the fixed-noise grid logged each epoch (`fixed_noise`).
        noise_seed: seed of the fixed noise.
    """

    #: read by advlab.train: each of the D and G updates leaves the other network without
    #: gradients, so DDP must be told to look for unused parameters.
    ddp_find_unused_parameters = True
    checkpoint_hparams = ("generator", "discriminator", "latent_dim")

    def __init__(
        self,
        generator: ConfigLike,
        discriminator: ConfigLike,
        optimizer_g: ConfigLike,
        optimizer_d: ConfigLike,
        scheduler: ConfigLike = None,
        latent_dim: int = 128,
        image_shape: Sequence[int] | None = None,
        loss: str = "bce",
        d_steps_per_g_step: int = 1,
        ema_decay: float = 0.999,
        metrics: ConfigLike = None,
        grid_size: int = 64,
        noise_seed: int = 0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        if loss not in GAN_LOSSES:
            raise ConfigError(f"model.loss={loss!r} is not one of {', '.join(GAN_LOSSES)}")
        if not (isinstance(d_steps_per_g_step, int) and d_steps_per_g_step >= 1):
            raise ConfigError(
                f"model.d_steps_per_g_step must be an integer >= 1, got {d_steps_per_g_step!r}"
            )
        if not 0.0 <= ema_decay < 1.0:
            raise ConfigError(
                f"model.ema_decay={ema_decay} is outside [0, 1) (0 turns the EMA off)"
            )
        for name, cfg in (("generator", generator), ("discriminator", discriminator)):
            if not cfg or "_target_" not in cfg:
                raise ConfigError(
                    f"model.{name} needs a _target_ (e.g. advlab.nets.DCGAN{name.title()})"
                )
        for name, cfg in (("optimizer_g", optimizer_g), ("optimizer_d", optimizer_d)):
            if cfg is None:
                raise ConfigError(f"model.{name} is required (a _partial_ torch.optim config)")
        metrics_cfg = {**METRICS_DEFAULTS, **(as_plain_dict(metrics) if metrics else {})}
        unknown = set(metrics_cfg) - set(METRICS_DEFAULTS)
        if unknown:
            raise ConfigError(
                f"model.metrics has unknown keys {sorted(unknown)}; known: {sorted(METRICS_DEFAULTS)}"
            )
        self.save_hyperparameters(
            {
                "generator": as_plain_dict(generator),
                "discriminator": as_plain_dict(discriminator),
                "optimizer_g": as_plain_dict(optimizer_g),
                "optimizer_d": as_plain_dict(optimizer_d),
                "scheduler": as_plain_dict(scheduler) if scheduler else None,
                "latent_dim": latent_dim,
                "image_shape": None if image_shape is None else [int(v) for v in image_shape],
                "loss": loss,
                "d_steps_per_g_step": d_steps_per_g_step,
                "ema_decay": ema_decay,
                "metrics": metrics_cfg,
                "grid_size": grid_size,
                "noise_seed": noise_seed,
            }
        )
        self.generator: nn.Module | None = None
        self.discriminator: nn.Module | None = None
        self.generator_ema: nn.Module | None = None
        noise = torch.Generator().manual_seed(noise_seed)
        self.register_buffer("fixed_noise", torch.randn(grid_size, latent_dim, generator=noise))
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.train_stats = nn.ModuleDict({name: MeanMetric() for name in STATS})
        self.val_fid_best = MinMetric()
        self._quality: QualityMetrics | None = None
        self._metrics_ready = False
        self._real_features_done = False
        self._evaluate_now = False
        if image_shape is not None:
            self.build_networks(image_shape)

    # ---- networks -----------------------------------------------------------------------------
    def build_networks(self, image_shape: Sequence[int]) -> None:
        """Instantiate G, D (and G's EMA copy) for `image_shape`; refuse shapes they cannot make."""
        shape = tuple(int(v) for v in image_shape)
        where = f"model=gan ({self.hparams.generator['_target_'].rsplit('.', 1)[-1]})"
        try:
            generator = hydra.utils.instantiate(
                self.hparams.generator, latent_dim=self.hparams.latent_dim, image_shape=shape
            )
            discriminator = hydra.utils.instantiate(self.hparams.discriminator, image_shape=shape)
            probe = torch.randn(2, self.hparams.latent_dim)
            with torch.no_grad():
                images = generator.eval()(probe)
                logits = discriminator.eval()(images)
        except Exception as err:  # Hydra wraps constructor errors; the first line says enough
            reason = " ".join(str(err).split())[:240]
            raise ConfigError(
                f"{where} cannot make images of shape {shape} (channels, height, width): {reason}"
            ) from err
        if tuple(images.shape[1:]) != shape or logits.shape != (2,):
            raise ConfigError(
                f"{where} makes images of shape {tuple(images.shape[1:])} and discriminator logits "
                f"of shape {tuple(logits.shape[1:])}, but the data is {shape} and one logit per image is needed"
            )
        self.generator = generator.train()
        self.discriminator = discriminator.train()
        if self.hparams.ema_decay > 0:
            self.generator_ema = copy.deepcopy(generator).requires_grad_(False)
        self.hparams.image_shape = list(shape)

    def configure_for_data(self, datamodule: LightningDataModule | None) -> None:
        """Everything that can fail before training: size the networks from the data's `dims`
        (or check that a given `image_shape` matches them) and load the feature extractor.

        `advlab.train` calls it before the Trainer starts; `setup()` calls it otherwise.
        """
        dims = getattr(datamodule, "dims", None)
        name = getattr(datamodule, "name", type(datamodule).__name__)
        if self.generator is None:
            if dims is None:
                raise ConfigError(
                    f"model.image_shape is needed: {name} does not tell its image shape (dims)"
                )
            self.build_networks(dims)
        elif dims is not None and tuple(dims) != tuple(self.hparams.image_shape):
            raise ConfigError(
                f"model=gan makes images of shape {tuple(self.hparams.image_shape)} but {name} images "
                f"are {tuple(dims)} (channels, height, width): drop model.image_shape to size "
                f"the networks from the data"
            )
        if not self._metrics_ready:
            self._metrics_ready = True
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

    def setup(self, stage: str) -> None:
        if self.generator is None or not self._metrics_ready:
            self.configure_for_data(self.trainer.datamodule)

    # ---- sampling -----------------------------------------------------------------------------
    @property
    def sampler(self) -> nn.Module:
        """The network `sample()` uses: the EMA generator when there is one."""
        if self.generator is None:
            raise RuntimeError(
                "GAN networks are not built yet: pass image_shape or call configure_for_data"
            )
        return self.generator_ema if self.generator_ema is not None else self.generator

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

    # ---- training -----------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        real = batch[0] * 2 - 1
        n = len(real)
        update_generator = (batch_idx + 1) % self.hparams.d_steps_per_g_step == 0
        stats = adversarial_step(
            self,
            self.generator,
            self.discriminator,
            real,
            make_fake=lambda: self.generator(
                torch.randn(n, self.hparams.latent_dim, device=self.device)
            ),
            loss=self.hparams.loss,
            update_generator=update_generator,
        )
        schedulers = self.lr_schedulers() if self.hparams.scheduler else None
        if schedulers:
            scheduler_g, scheduler_d = schedulers
            scheduler_d.step()
            if update_generator:
                scheduler_g.step()
        if update_generator and self.generator_ema is not None:
            decay = ema_decay_at(self.hparams.ema_decay, int(self.ema_updates))
            update_ema(self.generator_ema, self.generator, decay)
            self.ema_updates += 1
        for name, value in stats.items():
            metric = self.train_stats[name]
            metric(value)
            self.log(
                f"train/{name}",
                metric,
                on_step=True,
                on_epoch=True,
                prog_bar=name.startswith("loss"),
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        refuse_non_finite_weights(self, checkpoint)

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

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
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

    # ---- optimization -------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """[G's optimizer, D's optimizer] (the order `adversarial_step` expects), plus their
        LR schedulers when `scheduler` is set (stepped in `training_step`: manual optimization).
        """
        make_g = hydra.utils.instantiate(self.hparams.optimizer_g)
        make_d = hydra.utils.instantiate(self.hparams.optimizer_d)
        optimizers = [
            make_g(params=self.generator.parameters()),
            make_d(params=self.discriminator.parameters()),
        ]
        if not self.hparams.scheduler:
            return optimizers
        batches = int(self.trainer.estimated_stepping_batches)
        steps = (max(1, batches // self.hparams.d_steps_per_g_step), batches)
        make = hydra.utils.instantiate(self.hparams.scheduler)
        func, keywords = getattr(make, "func", make), getattr(make, "keywords", {})
        fill = "total_iters" in inspect.signature(func).parameters and "total_iters" not in keywords
        schedulers = [
            make(optimizer=opt, **({"total_iters": n} if fill else {}))
            for opt, n in zip(optimizers, steps, strict=True)
        ]
        return optimizers, schedulers
