"""The base of GAN and AdvGAN: a generator trained against a discriminator, by hand.

It owns what the two share: the checks of their configs, building and probing both networks
for the data's image shape, the optimizers (and an optional LR scheduler), the discriminator
and generator updates, the NaN guards and the training statistics. A subclass says what a fake
image is (`fake_images`), what the generator minimizes (`generator_objective`) and how it is
evaluated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import hydra
import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.utilities import grad_norm
from omegaconf import DictConfig
from torch import nn
from torchmetrics import MeanMetric

from advlab.attacks.build import as_plain_dict
from advlab.checkpoints import SafeCheckpointLoading
from advlab.errors import ConfigError
from advlab.models.gan_step import (
    GAN_LOSSES,
    TrainingDivergedError,
    build_optimizers,
    discriminator_loss,
    generator_loss,
    refuse_non_finite_weights,
)

ConfigLike = Mapping[str, Any] | DictConfig | None
Batch = tuple[torch.Tensor, torch.Tensor]

LossFn = Callable[[Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]]
#: the short names in the logged statistics (loss_d, grad_norm_g, ...)
PLAYERS = {"d": "discriminator", "g": "generator"}
#: the key of the total gradient norm in `lightning.pytorch.utilities.grad_norm`'s answer
GRAD_NORM_TOTAL = "grad_2.0_norm_total"


def image_shape_of(value: Sequence[int] | None) -> tuple[int, int, int]:
    """(C, H, W) as ints, or one line saying what `model.image_shape` must be."""
    if value is None or isinstance(value, str) or len(value) != 3:
        raise ConfigError(
            f"model.image_shape={value!r} must be (channels, height, width); the model configs "
            f"take it from the data config (image_shape: ${{data.image_shape}})"
        )
    return tuple(int(v) for v in value)  # type: ignore[return-value]


class TwoPlayerModule(SafeCheckpointLoading, LightningModule):
    """A generator G and a discriminator D trained with manual optimization: one D update per
    batch, one G update every `d_steps_per_g_step` batches, both through Lightning's optimizer
    wrappers so that `global_step`, checkpoints and resume count both. Networks work in [-1, 1].

    Both networks are built here, from `image_shape`, and probed with two images, so a network
    that cannot work on the data fails in one line before training.

    Args:
        generator: config (`_target_` + arguments) of G; called with `image_shape` and
            `generator_kwargs()`.
        discriminator: config of D (one logit per image); called with `image_shape`.
        optimizer_g, optimizer_d: `_partial_` optimizer configs for G and D.
        image_shape: (C, H, W) of the images, from the data config.
        scheduler: optional `_partial_` LR scheduler config applied to both optimizers and
            stepped with them; `total_iters` (e.g. PolynomialLR: linear decay to 0) is filled in
            with each optimizer's number of steps in the run.
        loss: `bce` (non-saturating) or `hinge`.
        d_steps_per_g_step: discriminator updates per generator update.
        own_hparams: the subclass's own hyperparameters, already checked; stored with the above.
    """

    #: read by advlab.train: each of the D and G updates leaves the other network without
    #: gradients, so DDP must be told to look for unused parameters.
    ddp_find_unused_parameters = True
    #: the model config's name, for messages (`model=<name>`)
    config_name = "gan"
    #: statistics logged every step as train/<name> (a subclass may add its own)
    stats: tuple[str, ...] = ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g")
    #: the statistics shown in the progress bar
    progress_bar_stats: tuple[str, ...] = ("loss_d", "loss_g")

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
        **own_hparams: Any,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        if loss not in GAN_LOSSES:
            raise ConfigError(f"model.loss={loss!r} is not one of {', '.join(GAN_LOSSES)}")
        if not (isinstance(d_steps_per_g_step, int) and d_steps_per_g_step >= 1):
            raise ConfigError(
                f"model.d_steps_per_g_step must be an integer >= 1, got {d_steps_per_g_step!r}"
            )
        for name, cfg in (("generator", generator), ("discriminator", discriminator)):
            if not cfg or "_target_" not in cfg:
                raise ConfigError(
                    f"model.{name} needs a _target_ (see configs/model/{self.config_name}.yaml)"
                )
        for name, cfg in (("optimizer_g", optimizer_g), ("optimizer_d", optimizer_d)):
            if cfg is None:
                raise ConfigError(f"model.{name} is required (a _partial_ torch.optim config)")
        self.save_hyperparameters(
            {
                "generator": as_plain_dict(generator),
                "discriminator": as_plain_dict(discriminator),
                "optimizer_g": as_plain_dict(optimizer_g),
                "optimizer_d": as_plain_dict(optimizer_d),
                "image_shape": list(image_shape_of(image_shape)),
                "scheduler": as_plain_dict(scheduler) if scheduler else None,
                "loss": loss,
                "d_steps_per_g_step": d_steps_per_g_step,
                **own_hparams,
            }
        )
        self.generator, self.discriminator = self._build_networks()
        self.train_stats = nn.ModuleDict({name: MeanMetric() for name in self.stats})
        self._data_checked = False

    # ---- what a subclass says -----------------------------------------------------------------
    def generator_kwargs(self) -> dict[str, Any]:
        """Arguments G is built with besides `image_shape` (GAN: `latent_dim`)."""
        return {}

    def discriminator_kwargs(self) -> dict[str, Any]:
        """Arguments D is built with besides `image_shape` (a conditional GAN: `num_classes`)."""
        return {}

    def conditioning(self, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What G and D get besides their main input for a batch with these labels: nothing,
        unless the networks are class-conditional."""
        return ()

    def generator_probe(self, n: int) -> torch.Tensor:
        """`n` inputs of G to check that it makes images of the data's shape."""
        raise NotImplementedError

    def fake_images(self, batch: Batch) -> torch.Tensor:
        """A fresh batch of generated images in [-1, 1], differentiable with respect to G."""
        raise NotImplementedError

    def generator_objective(
        self, batch: Batch, fake: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's loss on `fake`, plus detached statistics to log: here the GAN loss alone."""
        logits = self.discriminator(fake, *self.conditioning(batch[1]))
        return generator_loss(self.hparams.loss, logits), {}

    def on_generator_step(self) -> None:
        """Called after every generator update (GAN: updates its EMA)."""

    def prepare_evaluation(self, datamodule: LightningDataModule | None) -> None:
        """Load what evaluation needs and can fail on, before training (FID features, judges)."""

    # ---- networks and data --------------------------------------------------------------------
    def _build_networks(self) -> tuple[nn.Module, nn.Module]:
        """G and D for `image_shape`, probed with two inputs; one ConfigError if they do not fit."""
        shape = tuple(self.hparams.image_shape)
        generator_class = self.hparams.generator["_target_"].rsplit(".", 1)[-1]
        where = f"model={self.config_name} ({generator_class})"
        try:
            generator = hydra.utils.instantiate(
                self.hparams.generator, image_shape=shape, **self.generator_kwargs()
            )
            discriminator = hydra.utils.instantiate(
                self.hparams.discriminator, image_shape=shape, **self.discriminator_kwargs()
            )
            condition = self.conditioning(torch.zeros(2, dtype=torch.long))
            with torch.no_grad():
                images = generator.eval()(self.generator_probe(2), *condition)
                logits = discriminator.eval()(images, *condition)
        except Exception as err:  # Hydra wraps constructor errors; the first line says enough
            reason = " ".join(str(err).split())[:240]
            raise ConfigError(
                f"{where} cannot make images of shape {shape} (channels, height, width): {reason}"
            ) from err
        if tuple(images.shape[1:]) != shape or logits.shape != (2,):
            raise ConfigError(
                f"{where} makes images of shape {tuple(images.shape[1:])} and discriminator logits "
                f"of shape {tuple(logits.shape[1:])}, but the data is {shape} and one logit per "
                f"image is needed"
            )
        return generator.train(), discriminator.train()

    def configure_for_data(self, datamodule: LightningDataModule | None) -> None:
        """What can fail before training: the data's images must have `image_shape`, and
        `prepare_evaluation` loads its helpers. `advlab.train` calls it; `setup()` otherwise."""
        dims = getattr(datamodule, "dims", None)
        shape = tuple(self.hparams.image_shape)
        if dims is not None and tuple(dims) != shape:
            name = getattr(datamodule, "name", type(datamodule).__name__)
            raise ConfigError(
                f"model={self.config_name} makes images of shape {shape} but {name} images are "
                f"{tuple(dims)} (channels, height, width): leave model.image_shape to the data "
                f"config (data.image_shape)"
            )
        self.prepare_evaluation(datamodule)
        self._data_checked = True

    def setup(self, stage: str) -> None:
        if not self._data_checked:
            self.configure_for_data(self.trainer.datamodule)

    # ---- training -----------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> None:
        """One D update and, every `d_steps_per_g_step` batches, one G update."""
        update_generator = (batch_idx + 1) % self.hparams.d_steps_per_g_step == 0
        opt_g, opt_d = self.optimizers()
        stats = self._update("d", opt_d, self.discriminator, self._d_loss, batch)
        if update_generator:
            stats.update(self._update("g", opt_g, self.generator, self._g_loss, batch))
            self.on_generator_step()
        if self.hparams.scheduler:
            scheduler_g, scheduler_d = self.lr_schedulers()
            scheduler_d.step()
            if update_generator:
                scheduler_g.step()
        for name, value in stats.items():
            metric = self.train_stats[name]
            metric(value)
            self.log(f"train/{name}", metric, on_step=True, on_epoch=True,
                     prog_bar=name in self.progress_bar_stats)  # fmt: skip

    def _d_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        real = batch[0] * 2 - 1
        with torch.no_grad():
            fake = self.fake_images(batch)
        # one forward for both halves: one spectral-norm power iteration per update, and faster;
        # a conditional GAN's fakes are drawn for the batch's labels (`fake_images`)
        labels = torch.cat([batch[1], batch[1]])
        logits = self.discriminator(torch.cat([real, fake]), *self.conditioning(labels))
        real_logits, fake_logits = logits.split([len(real), len(fake)])
        stats = {"d_real": real_logits.detach().mean(), "d_fake": fake_logits.detach().mean()}
        return discriminator_loss(self.hparams.loss, real_logits, fake_logits), stats

    def _g_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.generator_objective(batch, self.fake_images(batch))

    def _update(
        self, player: str, optimizer: Any, net: nn.Module, loss_fn: LossFn, batch: Batch
    ) -> dict[str, torch.Tensor]:
        """Step `optimizer` on `loss_fn(batch)`; toggled first, so only `net` gets gradients."""
        self.toggle_optimizer(optimizer)
        loss, stats = loss_fn(batch)
        self._check_finite(f"the {PLAYERS[player]} loss", loss)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        # after DDP's all-reduce: the same on every rank
        total = grad_norm(net, norm_type=2).get(GRAD_NORM_TOTAL, torch.zeros(()))
        optimizer.step()
        self.untoggle_optimizer(optimizer)
        return {**stats, f"loss_{player}": loss.detach(), f"grad_norm_{player}": total}

    # ---- NaN guards ---------------------------------------------------------------------------
    def _check_finite(self, name: str, value: torch.Tensor) -> None:
        """Raise TrainingDivergedError (on every process at once) when `value` is NaN or inf.

        Checked before the backward pass, so the weights and last.ckpt stay those of the last
        good update. The decision is reduced across processes: a rank that raised alone would
        leave the others waiting in the next collective.
        """
        bad = not bool(torch.isfinite(value).all())
        if self._trainer is not None:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise TrainingDivergedError(
                f"{name} is not finite (NaN or inf) at epoch {self.current_epoch}, global step "
                f"{self.global_step}: training stopped, the last checkpoint written before "
                f"this epoch is kept (checkpoints/last.ckpt). Lower the learning rates, or try "
                f"model.loss=hinge / spectral norm in the discriminator"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        refuse_non_finite_weights(checkpoint, self.current_epoch)

    # ---- optimization -------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """[G's optimizer, D's optimizer], plus their LR schedulers when `scheduler` is set
        (stepped in `training_step`: manual optimization)."""
        batches = int(self.trainer.estimated_stepping_batches) if self.hparams.scheduler else 0
        return build_optimizers(
            self.hparams, self.generator.parameters(), self.discriminator.parameters(), batches
        )
