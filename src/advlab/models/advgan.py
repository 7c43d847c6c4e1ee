"""AdvGAN (Xiao et al. 2018): a generator that learns perturbations fooling a frozen classifier."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule, LightningModule
from omegaconf import DictConfig
from torch import nn
from torchmetrics import MaxMetric, MeanMetric

from advlab.attacks.build import as_plain_dict
from advlab.checkpoints import SafeCheckpointLoading, load_classifier_net
from advlab.errors import ConfigError
from advlab.evaluation.measure import attack_batch
from advlab.evaluation.tally import JudgeTally
from advlab.models.frozen_classifier import FrozenClassifier
from advlab.models.gan_step import GAN_LOSSES, adversarial_step, refuse_non_finite_weights

ConfigLike = Mapping[str, Any] | DictConfig | None

STATS = ("loss_d", "loss_g", "loss_adv", "loss_hinge", "fooled", "d_real", "d_fake",
         "grad_norm_d", "grad_norm_g")  # fmt: skip
#: name of the target classifier in the logged metrics; transfer classifiers log under their own
TARGET = "target"
#: perturbation sizes logged for the target's examples (the same for every judge)
NORMS = ("linf_mean", "linf_max", "l2_mean", "l2_max")
PERTURB_CHUNK = 1000


def cw_margin_loss(
    logits: torch.Tensor, labels: torch.Tensor, targeted: bool, kappa: float = 0.0
) -> torch.Tensor:
    """Carlini & Wagner's margin loss, lower is more adversarial (the mean over the batch).

    Untargeted (`labels` = true classes): max(Z_y - max_{i != y} Z_i, -kappa): reaches -kappa once
    another class leads by kappa. Targeted (`labels` = target classes): max(max_{i != t} Z_i - Z_t,
    -kappa). Past the margin an image contributes no gradient, so the generator spends its
    effort on the images still classified correctly.
    """
    chosen = F.one_hot(labels, logits.shape[1]).bool()
    label_logit = logits[chosen]
    best_other = logits.masked_fill(chosen, float("-inf")).amax(dim=1)
    margin = best_other - label_logit if targeted else label_logit - best_other
    return margin.clamp_min(-kappa).mean()


class AdvGAN(SafeCheckpointLoading, LightningModule):
    """AdvGAN: G(x) proposes a perturbation, x + eps * G(x) must fool a fixed target classifier
    and look real to a discriminator D (Xiao et al. 2018, "Generating Adversarial Examples with
    Adversarial Networks").

    Generator loss = C&W margin loss of the target on x_adv + `gan_weight` * GAN loss (D on x_adv)
    + `hinge_weight` * mean(relu(||x_adv - x||_2 - `hinge_bound`)). D learns to tell x from x_adv.
    Both are trained with the GAN module's step (`gan_step.adversarial_step`). The perturbation is
    `eps * tanh(G(x))`, then x + perturbation is clipped to [0, 1]: x_adv is always within eps of
    x in Linf and a valid image, by construction, whatever generator is configured. After training one forward pass of G
    attacks a batch (`perturb`); `advlab.attacks.advgan.AdvGANAttack` makes it an attack config.

    The target is frozen (eval mode, no gradients, in no optimizer). Its network config is stored
    in the hyperparameters (`target_net`) and its weights in this module's `state_dict`, so
    `AdvGAN.load_from_checkpoint(path)` works without the original classifier file, and later
    changes to that file do not change a trained AdvGAN.

    Each validation (and test) epoch logs, on the split's images: `<stage>/success_rate` (share
    of the images the target got right that x_adv makes it get wrong), `robust_acc`, `clean_acc`,
    `linf_mean/max`, `l2_mean/max` of the perturbations, and the same success numbers for every
    transfer classifier (`<stage>/<name>/success_rate`), which the generator never saw.

    Args:
        generator: config of an image-to-image network with unbounded output (e.g.
            `advlab.nets.PerturbationGenerator`); called with `image_shape`.
        discriminator: config of a discriminator from `advlab.nets`, called with `image_shape`.
        optimizer_g, optimizer_d: `_partial_` optimizer configs for G and D.
        target_ckpt: the classifier to fool: a `model=robust` checkpoint.
        eps: Linf budget of the perturbations, in pixels of [0, 1] images (MNIST 0.3).
        target_class: None for an untargeted attack, else the class every image is pushed to.
        kappa: confidence margin of the C&W loss (0: just cross the decision boundary).
        gan_weight: weight of the GAN loss (the paper's alpha); 0 trains no realism.
        hinge_weight: weight of the perturbation-size hinge (the paper's beta).
        hinge_bound: L2 norm of the perturbation that costs nothing (the paper's c).
        loss: GAN loss, `bce` (non-saturating) or `hinge`.
        d_steps_per_g_step: discriminator updates per generator update.
        image_shape: (C, H, W) of the images; None means "from the data".
        transfer_ckpts: other `model=robust` checkpoints, a list (named transfer_0, ...) or a
            mapping name -> path: success rate against each at validation and test. Loaded at
            fit/test time, not stored in the checkpoint.
        target_net: written by AdvGAN, leave it None: the target's network config, read from
            `target_ckpt`; with it, a checkpoint rebuilds the target and its stored weights.
    """

    #: read by advlab.train: each of the D and G updates leaves the other network without
    #: gradients, so DDP must be told to look for unused parameters.
    ddp_find_unused_parameters = True
    checkpoint_hparams = ("target_net", "eps", "generator", "image_shape")

    def __init__(
        self,
        generator: ConfigLike,
        discriminator: ConfigLike,
        optimizer_g: ConfigLike,
        optimizer_d: ConfigLike,
        target_ckpt: str | None = None,
        eps: float = 0.3,
        target_class: int | None = None,
        kappa: float = 2.0,
        gan_weight: float = 0.1,
        hinge_weight: float = 1.0,
        hinge_bound: float = 5.0,
        loss: str = "bce",
        d_steps_per_g_step: int = 1,
        image_shape: Sequence[int] | None = None,
        transfer_ckpts: Sequence[str] | Mapping[str, str] | None = None,
        target_net: ConfigLike = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        if loss not in GAN_LOSSES:
            raise ConfigError(f"model.loss={loss!r} is not one of {', '.join(GAN_LOSSES)}")
        if not (isinstance(eps, (int, float)) and 0 < eps <= 1):
            raise ConfigError(
                f"model.eps={eps!r} is outside (0, 1]: a Linf budget in pixels of [0, 1] images "
                f"(MNIST 0.3, CIFAR-10 8/255≈0.0314)"
            )
        if target_class is not None and not (isinstance(target_class, int) and target_class >= 0):
            raise ConfigError(
                f"model.target_class={target_class!r} must be null (untargeted) or a class index"
            )
        for name, value in (("kappa", kappa), ("gan_weight", gan_weight),
                            ("hinge_weight", hinge_weight), ("hinge_bound", hinge_bound)):  # fmt: skip
            if not value >= 0:
                raise ConfigError(f"model.{name} must be >= 0, got {value}")
        if not (isinstance(d_steps_per_g_step, int) and d_steps_per_g_step >= 1):
            raise ConfigError(
                f"model.d_steps_per_g_step must be an integer >= 1, got {d_steps_per_g_step!r}"
            )
        for name, cfg in (("generator", generator), ("discriminator", discriminator)):
            if not cfg or "_target_" not in cfg:
                raise ConfigError(f"model.{name} needs a _target_ (see configs/model/advgan.yaml)")
        for name, cfg in (("optimizer_g", optimizer_g), ("optimizer_d", optimizer_d)):
            if cfg is None:
                raise ConfigError(f"model.{name} is required (a _partial_ torch.optim config)")
        transfers = _transfer_paths(transfer_ckpts)
        if target_net is None:
            target_net, net = load_classifier_net(target_ckpt, where="model.target_ckpt")
        else:  # a checkpoint being reloaded: its state_dict brings the target's weights
            target_net = as_plain_dict(target_net)
            net = hydra.utils.instantiate(target_net)
        self.save_hyperparameters(
            {
                "generator": as_plain_dict(generator),
                "discriminator": as_plain_dict(discriminator),
                "optimizer_g": as_plain_dict(optimizer_g),
                "optimizer_d": as_plain_dict(optimizer_d),
                "target_ckpt": None if target_ckpt is None else str(target_ckpt),
                "eps": float(eps),
                "target_class": target_class,
                "kappa": float(kappa),
                "gan_weight": float(gan_weight),
                "hinge_weight": float(hinge_weight),
                "hinge_bound": float(hinge_bound),
                "loss": loss,
                "d_steps_per_g_step": d_steps_per_g_step,
                "image_shape": None if image_shape is None else [int(v) for v in image_shape],
                "transfer_ckpts": transfers,
                "target_net": target_net,
            }
        )
        self.target = FrozenClassifier(net)
        self.generator: nn.Module | None = None
        self.discriminator: nn.Module | None = None
        # plain dict, not a ModuleDict: evaluation-only, never in the checkpoint or optimizers
        self.transfer: dict[str, FrozenClassifier] = {}
        self._transfers_loaded = False
        self.train_stats = nn.ModuleDict({name: MeanMetric() for name in STATS})
        self.val_success_rate_best = MaxMetric()
        self._tally = JudgeTally([TARGET])
        if image_shape is not None:
            self.build_networks(image_shape)

    # ---- networks -----------------------------------------------------------------------------
    def build_networks(self, image_shape: Sequence[int]) -> None:
        """Instantiate G and D for `image_shape` and check that the target takes such images."""
        shape = tuple(int(v) for v in image_shape)
        num_classes = self.target.probe_num_classes(shape, where="model.target_ckpt")
        target_class = self.hparams.target_class
        if target_class is not None and target_class >= num_classes:
            raise ConfigError(
                f"model.target_class={target_class} but the target classifier has "
                f"{num_classes} classes (0..{num_classes - 1})"
            )
        where = "model=advgan"
        try:
            generator = hydra.utils.instantiate(self.hparams.generator, image_shape=shape)
            discriminator = hydra.utils.instantiate(self.hparams.discriminator, image_shape=shape)
            probe = torch.rand(2, *shape) * 2 - 1
            with torch.no_grad():
                pattern = generator.eval()(probe)
                logits = discriminator.eval()(probe)
        except Exception as err:  # Hydra wraps constructor errors; the first line says enough
            reason = " ".join(str(err).split())[:240]
            raise ConfigError(
                f"{where} cannot work on images of shape {shape} (channels, height, width): {reason}"
            ) from err
        if tuple(pattern.shape[1:]) != shape or logits.shape != (2,):
            raise ConfigError(
                f"{where}: the generator returns shape {tuple(pattern.shape[1:])} and the "
                f"discriminator {tuple(logits.shape[1:])} for images of shape {shape}; "
                f"an image-to-image generator and one logit per image are needed"
            )
        self.generator = generator.train()
        self.discriminator = discriminator.train()
        self.hparams.image_shape = list(shape)

    def configure_for_data(self, datamodule: LightningDataModule | None) -> None:
        """What can fail before training: size the networks from the data's `dims` (or check a
        given `image_shape` against them) and load the transfer classifiers.

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
                f"model=advgan was built for images of shape {tuple(self.hparams.image_shape)} "
                f"but {name} images are {tuple(dims)} (channels, height, width)"
            )
        classes = getattr(datamodule, "num_classes", None)
        target_classes = self.target.probe_num_classes(
            self.hparams.image_shape, "model.target_ckpt"
        )
        if classes is not None and classes != target_classes:
            raise ConfigError(
                f"the target classifier (model.target_ckpt) has {target_classes} classes but "
                f"{name} has {classes}: attack a classifier trained on this data"
            )
        if not self._transfers_loaded:
            for key, path in self.hparams.transfer_ckpts.items():
                where = f"model.transfer_ckpts.{key}"
                _, net = load_classifier_net(path, where=where)
                self.transfer[key] = FrozenClassifier(net)
                self.transfer[key].probe_num_classes(self.hparams.image_shape, where=where)
            self._transfers_loaded = True

    def setup(self, stage: str) -> None:
        if self.generator is None or not self._transfers_loaded:
            self.configure_for_data(self.trainer.datamodule)

    # ---- the attack ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Adversarial images for images x in [0, 1] (differentiable with respect to G)."""
        if self.generator is None:
            raise RuntimeError(
                "AdvGAN networks are not built yet: pass image_shape or call configure_for_data"
            )
        delta = self.hparams.eps * torch.tanh(self.generator(x * 2 - 1))
        return (x + delta).clamp(0, 1)

    @torch.no_grad()
    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        """Adversarial images for x in [0, 1]: within eps of x (Linf) and in [0, 1].

        One generator forward pass (in eval mode, restored after), on this module's device.
        """
        was_training = self.generator.training
        self.generator.eval()
        try:
            chunks = x.to(self.device).split(PERTURB_CHUNK)
            return torch.cat([self(chunk) for chunk in chunks])
        finally:
            self.generator.train(was_training)

    def _attacked_labels(self, y: torch.Tensor) -> torch.Tensor:
        """The labels the C&W loss works on: true classes, or the target class everywhere."""
        if self.hparams.target_class is None:
            return y
        return torch.full_like(y, self.hparams.target_class)

    # ---- training -----------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        labels = self._attacked_labels(y)
        targeted = self.hparams.target_class is not None
        parts: dict[str, torch.Tensor] = {}

        def attack_and_size_loss(fake: torch.Tensor) -> torch.Tensor:
            x_adv = (fake + 1) / 2
            logits = self.target(x_adv)
            adversarial = cw_margin_loss(logits, labels, targeted, self.hparams.kappa)
            size = (x_adv - x).flatten(1).norm(dim=1)
            hinge = F.relu(size - self.hparams.hinge_bound).mean()
            predicted = logits.detach().argmax(dim=1)
            fooled = predicted == labels if targeted else predicted != y
            parts.update(
                loss_adv=adversarial.detach(),
                loss_hinge=hinge.detach(),
                fooled=fooled.float().mean(),
            )
            return adversarial + self.hparams.hinge_weight * hinge

        update_generator = (batch_idx + 1) % self.hparams.d_steps_per_g_step == 0
        stats = adversarial_step(
            self,
            self.generator,
            self.discriminator,
            real=x * 2 - 1,
            make_fake=lambda: self(x) * 2 - 1,
            loss=self.hparams.loss,
            update_generator=update_generator,
            generator_extra_loss=attack_and_size_loss,
            gan_weight=self.hparams.gan_weight,
        )
        stats.update(parts)
        for name, value in stats.items():
            metric = self.train_stats[name]
            metric(value)
            self.log(
                f"train/{name}",
                metric,
                on_step=True,
                on_epoch=True,
                prog_bar=name in ("loss_g", "fooled"),
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        refuse_non_finite_weights(self, checkpoint)

    # ---- evaluation (validation and test) -----------------------------------------------------
    def _judges(self) -> dict[str, FrozenClassifier]:
        """The target first, then the transfer classifiers, in a fixed order on every rank."""
        return {TARGET: self.target, **self.transfer}

    def _start_evaluation(self) -> None:
        for net in self.transfer.values():  # not submodules: Lightning does not move them
            net.to(self.device)
        judges = [TARGET, *self.transfer]  # the same order on every process
        self._tally = JudgeTally(judges, target_class=self.hparams.target_class)

    def _evaluate(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Perturb once, score the same x_adv against the target and every transfer classifier."""
        x, y = batch
        eps = self.hparams.eps
        where = f"model=advgan ({stage})"
        outcome = attack_batch(self.target, lambda images, _: self.perturb(images), x, y, eps,
                               "Linf", where=where)  # fmt: skip
        self._tally.add(TARGET, outcome)
        for name, judge in self.transfer.items():
            seen = attack_batch(judge, lambda *_: outcome.x_adv, x, y, eps, "Linf", where=where)
            self._tally.add(name, seen)

    def _log_evaluation(self, stage: str) -> float:
        """Reduce the sums over processes and log them; returns the target's success rate."""
        summaries = self._tally.reduce(self.trainer.strategy.all_gather, self.device)
        keep = ["robust_acc", "clean_acc"]
        if self.hparams.target_class is not None:
            keep.append("targeted_success_rate")
        metrics = {f"{stage}/{name}/{key}": summaries[name][key]
                   for name in self.transfer for key in ["success_rate", *keep]}  # fmt: skip
        target = summaries[TARGET]
        metrics.update({f"{stage}/{key}": target[key] for key in keep + list(NORMS)})
        # every rank holds the same reduced numbers; sync_dist only keeps Lightning from warning
        self.log(f"{stage}/success_rate", target["success_rate"], prog_bar=True, sync_dist=True)
        self.log_dict(metrics, sync_dist=True)
        return target["success_rate"]

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def on_validation_epoch_end(self) -> None:
        success = self._log_evaluation("val")
        if self.trainer.sanity_checking:
            return
        if not math.isnan(success):  # NaN: the target got none of the images right
            self.val_success_rate_best(success)
        if self.val_success_rate_best.update_called:
            self.log("val/success_rate_best", self.val_success_rate_best.compute(), sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    # ---- optimization -------------------------------------------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """[G's optimizer, D's optimizer]: the order `adversarial_step` expects. Not the target."""
        make_g = hydra.utils.instantiate(self.hparams.optimizer_g)
        make_d = hydra.utils.instantiate(self.hparams.optimizer_d)
        return [
            make_g(params=self.generator.parameters()),
            make_d(params=self.discriminator.parameters()),
        ]


def _transfer_paths(value: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """name -> path of the transfer classifiers; a list is named transfer_0, transfer_1, ..."""
    if value is None:
        return {}
    if isinstance(value, (Mapping, DictConfig)):
        items = as_plain_dict(value).items()
    elif isinstance(value, (str, Path)):
        raise ConfigError(
            f"model.transfer_ckpts={value} must be a list of checkpoints, e.g. "
            f"model.transfer_ckpts=[{value}]"
        )
    else:
        items = ((f"transfer_{i}", path) for i, path in enumerate(value))
    paths = {str(name): str(path) for name, path in items}
    if TARGET in paths:
        raise ConfigError(f"model.transfer_ckpts: the name {TARGET!r} is the target's")
    return paths


def load_advgan(path: str | Path, where: str, map_location: Any = "cpu") -> AdvGAN:
    """A trained AdvGAN from `path`, or one ConfigError saying what the file is instead."""
    return AdvGAN.load_from_checkpoint(path, map_location=map_location, where=where)
