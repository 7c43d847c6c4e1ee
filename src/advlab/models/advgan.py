"""AdvGAN (Xiao et al. 2018): a generator that learns perturbations fooling a frozen classifier."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from omegaconf import DictConfig
from torchmetrics import MaxMetric

from advlab.attacks.advgan import ADVGAN_HPARAMS
from advlab.attacks.build import as_plain_dict
from advlab.checkpoints import load_classifier_net
from advlab.errors import ConfigError
from advlab.evaluation.measure import attack_batch
from advlab.evaluation.tally import JudgeTally
from advlab.models.frozen_classifier import FrozenClassifier
from advlab.models.two_player import Batch, ConfigLike, TwoPlayerModule
from advlab.nets.perturbation import perturb_images

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


class AdvGAN(TwoPlayerModule):
    """AdvGAN: G(x) proposes a perturbation, x + eps * tanh(G(x)) must fool a fixed target
    classifier and look real to a discriminator D (Xiao et al. 2018, "Generating Adversarial
    Examples with Adversarial Networks"). Training, checks and optimizers: `TwoPlayerModule`.

    Generator loss = C&W margin loss of the target on x_adv + `gan_weight` * GAN loss (D on x_adv)
    + `hinge_weight` * mean(relu(||x_adv - x||_2 - `hinge_bound`)). D learns to tell x from x_adv.
    x_adv comes from `advlab.nets.perturbation.perturb_images`, the formula the attack
    (`advlab.attacks.advgan.AdvGANAttack`) uses too: within eps of x in Linf and in [0, 1] by
    construction, whatever generator is configured. After training one forward pass of G attacks
    a batch (`perturb`).

    The target is frozen (eval mode, no gradients, in no optimizer). Its network config is stored
    in the hyperparameters (`target_net`) and its weights in this module's `state_dict`, so
    `AdvGAN.load_from_checkpoint(path)` works without the original classifier file, and later
    changes to that file do not change a trained AdvGAN.

    Each validation (and test) epoch logs, on the split's images: `<stage>/success_rate` (share
    of the images the target got right that x_adv makes it get wrong), `robust_acc`, `clean_acc`,
    `linf_mean/max`, `l2_mean/max` of the perturbations, and the same success numbers for every
    transfer classifier (`<stage>/<name>/success_rate`), which the generator never saw.

    Args:
        generator, discriminator, optimizer_g, optimizer_d: see `TwoPlayerModule`. G is
            image-to-image with unbounded output (e.g. `advlab.nets.PerturbationGenerator`).
        image_shape, scheduler, loss, d_steps_per_g_step: see `TwoPlayerModule`.
        target_ckpt: the classifier to fool: a `model=robust` checkpoint.
        eps: Linf budget of the perturbations, in pixels of [0, 1] images (the data's threat model).
        target_class: None for an untargeted attack, else the class every image is pushed to.
        kappa: confidence margin of the C&W loss (0: just cross the decision boundary).
        gan_weight: weight of the GAN loss (the paper's alpha); 0 trains no realism.
        hinge_weight: weight of the perturbation-size hinge (the paper's beta).
        hinge_bound: L2 norm of the perturbation that costs nothing (the paper's c).
        transfer_ckpts: other `model=robust` checkpoints, a list (named transfer_0, ...) or a
            mapping name -> path: success rate against each at validation and test. Loaded at
            fit/test time, not stored in the checkpoint.
        target_net: written by AdvGAN, leave it None: the target's network config, read from
            `target_ckpt`; with it, a checkpoint rebuilds the target and its stored weights.
    """

    config_name = "advgan"
    checkpoint_hparams = ADVGAN_HPARAMS
    stats = (*TwoPlayerModule.stats, "loss_adv", "loss_hinge", "fooled")
    progress_bar_stats = ("loss_g", "fooled")

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
        target_ckpt: str | None = None,
        eps: float = 0.3,
        target_class: int | None = None,
        kappa: float = 2.0,
        gan_weight: float = 0.1,
        hinge_weight: float = 1.0,
        hinge_bound: float = 5.0,
        transfer_ckpts: Sequence[str] | Mapping[str, str] | None = None,
        target_net: ConfigLike = None,
    ) -> None:
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
        transfers = _transfer_paths(transfer_ckpts)
        if target_net is None:
            target_net, net = load_classifier_net(target_ckpt, where="model.target_ckpt")
        else:  # a checkpoint being reloaded: its state_dict brings the target's weights
            target_net = as_plain_dict(target_net)
            net = hydra.utils.instantiate(target_net)
        super().__init__(
            generator, discriminator, optimizer_g, optimizer_d, image_shape, scheduler, loss,
            d_steps_per_g_step, target_ckpt=None if target_ckpt is None else str(target_ckpt),
            eps=float(eps), target_class=target_class, kappa=float(kappa),
            gan_weight=float(gan_weight), hinge_weight=float(hinge_weight),
            hinge_bound=float(hinge_bound), transfer_ckpts=transfers, target_net=target_net,
        )  # fmt: skip
        self.target = FrozenClassifier(net)
        num_classes = self.target.probe_num_classes(self.hparams.image_shape, "model.target_ckpt")
        if target_class is not None and target_class >= num_classes:
            raise ConfigError(
                f"model.target_class={target_class} but the target classifier has "
                f"{num_classes} classes (0..{num_classes - 1})"
            )
        # plain dict, not a ModuleDict: evaluation-only, never in the checkpoint or optimizers
        self.transfer: dict[str, FrozenClassifier] = {}
        self.val_success_rate_best = MaxMetric()
        self._tally = JudgeTally([TARGET])

    # ---- the two-player hooks -----------------------------------------------------------------
    def generator_probe(self, n: int) -> torch.Tensor:
        shape = self.hparams.image_shape
        return torch.rand(n, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def fake_images(self, batch: Batch) -> torch.Tensor:
        return self(batch[0]) * 2 - 1

    def generator_objective(
        self, batch: Batch, fake: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`gan_weight` * GAN loss + C&W margin loss of the target + `hinge_weight` * size hinge."""
        realism, _ = super().generator_objective(batch, fake)
        x, y = batch
        targeted = self.hparams.target_class is not None
        labels = torch.full_like(y, self.hparams.target_class) if targeted else y
        x_adv = (fake + 1) / 2
        logits = self.target(x_adv)
        adversarial = cw_margin_loss(logits, labels, targeted, self.hparams.kappa)
        hinge = F.relu((x_adv - x).flatten(1).norm(dim=1) - self.hparams.hinge_bound).mean()
        predicted = logits.detach().argmax(dim=1)
        fooled = predicted == labels if targeted else predicted != y
        loss = (self.hparams.gan_weight * realism + adversarial
                + self.hparams.hinge_weight * hinge)  # fmt: skip
        stats = {"loss_adv": adversarial.detach(), "loss_hinge": hinge.detach(),
                 "fooled": fooled.float().mean()}  # fmt: skip
        return loss, stats

    def prepare_evaluation(self, datamodule: LightningDataModule | None) -> None:
        """The target must know the data's classes; load the transfer classifiers."""
        classes = getattr(datamodule, "num_classes", None)
        shape = self.hparams.image_shape
        target_classes = self.target.probe_num_classes(shape, "model.target_ckpt")
        if classes is not None and classes != target_classes:
            name = getattr(datamodule, "name", type(datamodule).__name__)
            raise ConfigError(
                f"the target classifier (model.target_ckpt) has {target_classes} classes but "
                f"{name} has {classes}: attack a classifier trained on this data"
            )
        for key, path in self.hparams.transfer_ckpts.items():
            where = f"model.transfer_ckpts.{key}"
            _, net = load_classifier_net(path, where=where)
            self.transfer[key] = FrozenClassifier(net)
            self.transfer[key].probe_num_classes(shape, where=where)

    # ---- the attack ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Adversarial images for images x in [0, 1] (differentiable with respect to G)."""
        return perturb_images(self.generator, x, self.hparams.eps)

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

    # ---- evaluation (validation and test) -----------------------------------------------------
    def _start_evaluation(self) -> None:
        for net in self.transfer.values():  # not submodules: Lightning does not move them
            net.to(self.device)
        judges = [TARGET, *self.transfer]  # the same order on every process
        self._tally = JudgeTally(judges, target_class=self.hparams.target_class)

    def _evaluate(self, stage: str, batch: Batch) -> None:
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

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
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

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate("test", batch)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")


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
