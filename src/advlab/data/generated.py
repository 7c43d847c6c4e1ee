"""Generated images mixed into every training batch (Gowal et al. 2021, Sehwag et al. 2022).

A trained GAN's generator draws a fixed share of each training batch on the batch's device, so
any training method gets the extra data without knowing it. Labels come from a conditional
generator (the class it was asked for) or from a classifier (pseudo-labels, Carmon et al. 2019),
which can also drop the samples it is not confident about.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from advlab.checkpoints import (
    GAN_HPARAMS,
    lightning_parts,
    load_classifier_net,
    read_checkpoint,
)
from advlab.errors import ConfigError
from advlab.generator_loading import rebuild_generator
from advlab.utils import get_logger

log = get_logger(__name__)

WHERE = "data.generated"
#: rounds of candidates drawn per batch when min_confidence drops some, before giving up
MAX_ROUNDS = 20
#: samples drawn once when the data is built, to report (and check) the kept share
PROBE = 512


def load_sampler(path: str | Path | None, where: str) -> tuple[nn.Module, int, int | None]:
    """(generator in eval mode on the CPU, latent_dim, num_classes or None) of a GAN checkpoint.

    The EMA generator when the run kept one (what `GAN.sample` draws from), else the generator.
    Only the generator is built, after its config's `_target_` is checked.
    """
    checkpoint = read_checkpoint(path, where)
    hparams, state = lightning_parts(checkpoint, path, where, GAN_HPARAMS, kind="a GAN")
    num_classes = hparams.get("num_classes")
    ema = "generator_ema.module."
    prefix = ema if any(key.startswith(ema) for key in state) else "generator."
    generator = rebuild_generator(
        hparams["generator"], state, prefix, where, path,
        latent_dim=int(hparams["latent_dim"]),
        image_shape=tuple(int(v) for v in hparams["image_shape"]),
        **({} if num_classes is None else {"num_classes": int(num_classes)}),
    )  # fmt: skip
    return generator, int(hparams["latent_dim"]), num_classes


def seed_of(*keys: int) -> int:
    """A 63-bit seed from a tuple of integers (run seed, rank, batch), without collisions in
    practice: nearby tuples give unrelated streams."""
    return int(
        np.random.SeedSequence([int(k) % 2**32 for k in keys]).generate_state(2, np.uint64)[0] >> 1
    )


class GeneratedData:
    """Draws labelled generated images for training batches, on the device of the batch.

    Args:
        ckpt: a `model=gan` or `model=cgan` checkpoint; its EMA generator draws in eval mode.
        fraction: share of every training batch that is generated, in (0, 1).
        labeler_ckpt: a `model=robust` checkpoint whose predictions label the samples of an
            unconditional generator (pseudo-labels); for a conditional one it only filters.
        min_confidence: with a labeler, keep only samples to which it gives at least this
            probability for their label (the requested class, or its own prediction).
        image_shape, num_classes: the data's, checked against the generator's.
    """

    def __init__(
        self,
        ckpt: str | None,
        fraction: float = 0.0,
        labeler_ckpt: str | None = None,
        min_confidence: float = 0.0,
        image_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
    ) -> None:
        if not 0.0 < fraction < 1.0:
            raise ConfigError(
                f"{WHERE}.fraction={fraction} must be in (0, 1): the share of every training "
                f"batch drawn from {WHERE}.ckpt{'' if ckpt else ' (a GAN checkpoint)'}"
            )
        if not ckpt:
            raise ConfigError(
                f"{WHERE}.fraction={fraction} needs {WHERE}.ckpt=<a model=cgan checkpoint of "
                f"the same data, or model=gan with {WHERE}.labeler_ckpt>"
            )
        if not 0.0 <= min_confidence < 1.0:
            raise ConfigError(f"{WHERE}.min_confidence={min_confidence} must be in [0, 1)")
        if min_confidence > 0 and not labeler_ckpt:
            raise ConfigError(
                f"{WHERE}.min_confidence={min_confidence} needs a classifier to be confident: "
                f"set {WHERE}.labeler_ckpt=<a model=robust checkpoint>"
            )
        self.generator, self.latent_dim, self.classes = load_sampler(ckpt, f"{WHERE}.ckpt")
        if self.classes is None and not labeler_ckpt:
            raise ConfigError(
                f"{WHERE}.ckpt={ckpt} is an unconditional GAN: its samples need labels from a "
                f"classifier ({WHERE}.labeler_ckpt=<a model=robust checkpoint>) or a "
                f"conditional GAN (model=cgan)"
            )
        self.labeler = None
        if labeler_ckpt:
            _, net = load_classifier_net(labeler_ckpt, f"{WHERE}.labeler_ckpt")
            self.labeler = net.eval().requires_grad_(False)
        self.fraction = float(fraction)
        self.min_confidence = float(min_confidence)
        self.ckpt = str(ckpt)
        self._check_fits(image_shape, num_classes)
        self.kept_share = self._probe_kept_share()
        self.batch_size = 0
        self._seed = (0, 0)
        self._batches = 0

    def _check_fits(self, image_shape: Sequence[int] | None, num_classes: int | None) -> None:
        with torch.no_grad():
            shape = tuple(
                self._generate(torch.zeros(2, self.latent_dim), torch.zeros(2).long()).shape[1:]
            )
        if image_shape is not None and shape != tuple(image_shape):
            raise ConfigError(
                f"{WHERE}.ckpt={self.ckpt} makes images of shape {shape}, but the data's are "
                f"{tuple(image_shape)}: train the GAN on the same data"
            )
        if self.classes is not None and num_classes is not None and self.classes != num_classes:
            raise ConfigError(
                f"{WHERE}.ckpt={self.ckpt} draws {self.classes} classes, the data has {num_classes}"
            )

    def _probe_kept_share(self) -> float:
        """Share of samples `min_confidence` keeps, on a fixed probe; too few is an error now
        rather than a stall in the middle of training."""
        if self.min_confidence == 0:
            return 1.0
        _, _, kept = self._candidates(PROBE, torch.Generator().manual_seed(0), torch.device("cpu"))
        share = float(kept.float().mean())
        if share < 0.05:
            raise ConfigError(
                f"{WHERE}.min_confidence={self.min_confidence} keeps {100 * share:.1f}% of the "
                f"samples of {self.ckpt}: lower it (or train the GAN longer)"
            )
        return share

    # ---- batches of a run -------------------------------------------------------------------
    def start(self, seed: int, rank: int, batch_size: int) -> int:
        """Mix into batches of `batch_size` (per process) from now on; returns how many real
        images each (full) batch brings. Samples are drawn with a seed of (`seed`, `rank`,
        batch number): reruns draw the same samples, processes different ones."""
        self.batch_size, self._seed = batch_size, (seed, rank)
        log.info(self.describe(batch_size))
        return self.split(batch_size)[0]

    def mix(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The real batch (float images in [0, 1]) followed by its generated share."""
        if not self.batch_size:
            raise RuntimeError("GeneratedData.start() must be called before mix()")
        n = self.to_add(len(images), self.batch_size)
        fake, fake_labels = self.draw(n, images.device, seed_of(*self._seed, self._batches))
        self._batches += 1
        return torch.cat([images, fake]), torch.cat([labels, fake_labels.to(labels.dtype)])

    def state_dict(self) -> dict[str, int]:
        return {"generated_batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._batches = int(state.get("generated_batches", 0))

    # ---- the split of a batch -------------------------------------------------------------
    def split(self, batch_size: int) -> tuple[int, int]:
        """(real, generated) images of a full batch of `batch_size` (one process's share)."""
        generated = round(self.fraction * batch_size)
        if generated >= batch_size:
            raise ConfigError(
                f"{WHERE}.fraction={self.fraction} leaves no real image in batches of "
                f"{batch_size} per process: lower it or raise data.batch_size"
            )
        return batch_size - generated, generated

    def to_add(self, real: int, batch_size: int) -> int:
        """Generated images to add to `real` real ones: the full-batch count for a full batch,
        the same ratio (rounded) for the last, shorter one."""
        full_real, full_generated = self.split(batch_size)
        return full_generated if real == full_real else round(real * full_generated / full_real)

    # ---- drawing --------------------------------------------------------------------------
    @torch.no_grad()
    def draw(self, n: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` images in [0, 1] (float) and labels (long) on `device`; the same seed gives the
        same samples."""
        rng = torch.Generator(device=device).manual_seed(seed)
        images, labels, found = [], [], 0
        for _ in range(MAX_ROUNDS):
            want = n - found
            size = want if self.min_confidence == 0 else math.ceil(1.5 * want / self.kept_share) + 8
            x, y, kept = self._candidates(size, rng, device)
            images.append(x[kept][:want])
            labels.append(y[kept][:want])
            found += len(images[-1])
            if found == n:
                return torch.cat(images), torch.cat(labels)
        raise ConfigError(
            f"{WHERE}.min_confidence={self.min_confidence}: {MAX_ROUNDS} rounds of samples gave "
            f"{found} of {n} confident ones; lower it"
        )

    def _candidates(
        self, size: int, rng: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`size` samples, their labels and which of them `min_confidence` keeps."""
        self._move_to(device)
        z = torch.randn(size, self.latent_dim, generator=rng, device=device)
        requested = None
        if self.classes is not None:
            requested = torch.randint(self.classes, (size,), generator=rng, device=device)
        images = self._generate(z, requested)
        if self.labeler is None:
            return images, requested, torch.ones(size, dtype=torch.bool, device=device)
        probs = self.labeler(images).float().softmax(1)
        if requested is None:
            confidence, labels = probs.max(1)
        else:
            labels, confidence = requested, probs.gather(1, requested[:, None]).squeeze(1)
        return images, labels, confidence >= self.min_confidence

    def _generate(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        inputs = (z,) if self.classes is None else (z, labels)
        return ((self.generator(*inputs) + 1) / 2).clamp(0, 1).float()

    def _move_to(self, device: torch.device) -> None:
        for net in (self.generator, self.labeler):
            if net is not None and next(net.parameters()).device != device:
                net.to(device)

    def describe(self, batch_size: int) -> str:
        """One line for the log: the split of a batch, and where labels come from."""
        real, generated = self.split(batch_size)
        if self.classes is not None:
            source = f"the conditional generator's classes ({self.classes})"
        else:
            source = "the labeler's predictions (pseudo-labels)"
        if self.min_confidence > 0:
            source += (
                f", kept when the labeler gives them >= {self.min_confidence:g} "
                f"({100 * self.kept_share:.0f}% of a probe)"
            )
        return (
            f"generated data: {generated} of every {batch_size} training images per process "
            f"({real} real) from {self.ckpt}; labels: {source}"
        )
