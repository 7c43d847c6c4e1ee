"""FID and KID (torchmetrics) between real and generated images, features computed once."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from advlab.errors import ConfigError
from advlab.quality.features import ClassifierFeatures

FEATURES = ("auto", "classifier", "inception", "none")


class _Precomputed(nn.Module):
    """Identity "feature extractor": QualityMetrics extracts once and feeds both metrics."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class InceptionFeatures(nn.Module):
    """torch-fidelity's Inception-v3 pool features (2048) for images in [0, 1], grey or RGB."""

    num_features = 2048

    def __init__(self) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.inception = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.inception((x.clamp(0, 1) * 255).to(torch.uint8))


class QualityMetrics:
    """FID and KID of generated vs real images in the feature space of `extractor`.

    A plain object, not an nn.Module, so the frozen extractor and the metric states stay out of
    the GAN's state_dict, its checkpoints and DDP's parameters. Real features are kept across
    `reset()` (the real images do not change); states are summed over processes in `compute()`.

    Args:
        extractor: images in [0, 1] -> (N, D) features, with a `num_features` attribute.
        kid_subsets, kid_subset_size: KID is averaged over this many random subsets of this
            size (shrunk to the number of samples when fewer are available).
    """

    def __init__(
        self, extractor: nn.Module, kid_subsets: int = 20, kid_subset_size: int = 1000
    ) -> None:
        self.extractor = extractor
        identity = _Precomputed(int(extractor.num_features))
        self.fid = FrechetInceptionDistance(feature=identity, reset_real_features=False)
        with warnings.catch_warnings():  # "KID keeps all features": a few thousand here, by design
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            self.kid = KernelInceptionDistance(
                feature=identity,
                reset_real_features=False,
                subsets=kid_subsets,
                subset_size=kid_subset_size,
            )
        self.kid_subset_size = kid_subset_size
        self.num_real = 0
        self.num_fake = 0

    def to(self, device: torch.device | str) -> QualityMetrics:
        self.extractor.to(device)
        self.fid.to(device)
        self.kid.to(device)
        return self

    def update(self, images: torch.Tensor, real: bool) -> None:
        """Add a batch of images in [0, 1] (N, C, H, W) to the real or the generated set."""
        features = self.extractor(images).double()
        self.fid.update(features, real=real)
        self.kid.update(features, real=real)
        if real:
            self.num_real += len(images)
        else:
            self.num_fake += len(images)

    def compute(self) -> dict[str, torch.Tensor]:
        """{"fid", "kid"} over all processes; needs at least 2 real and 2 generated images."""
        counts = torch.tensor([self.num_real, self.num_fake], device=self.fid.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        if int(counts.min()) < 2:
            raise ValueError(f"FID/KID need >= 2 real and generated images, got {counts.tolist()}")
        self.kid.subset_size = min(self.kid_subset_size, int(counts.min()))
        kid_mean, _kid_std = self.kid.compute()
        return {"fid": self.fid.compute().float(), "kid": kid_mean.float()}

    def reset(self, real: bool = False) -> None:
        """Forget the generated images (and the real ones too when `real`)."""
        for metric in (self.fid, self.kid):
            metric.reset_real_features = real
            metric.reset()
            metric.reset_real_features = False
        self.num_fake = 0
        if real:
            self.num_real = 0


def inception_or_reason() -> tuple[nn.Module | None, str]:
    """(Inception features, "") when torch-fidelity and its weights are available, else
    (None, why not): a missing package, no network for the first download, a bad file."""
    try:
        return InceptionFeatures(), ""
    except Exception as err:  # all of them mean "Inception is not available here"
        return None, f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"


def build_quality_metrics(
    image_shape: Sequence[int],
    feature: str = "auto",
    classifier: nn.Module | None = None,
    kid_subsets: int = 20,
    kid_subset_size: int = 1000,
) -> tuple[QualityMetrics | None, str]:
    """(QualityMetrics or None when skipped, one line saying which feature space is used).

    `classifier`: the penultimate layer of `classifier` (a `model=robust` network: offline, and
    what matters for digits). `inception`: the standard Inception-v3 FID (torch-fidelity; its
    weights download on first use). `auto`: the classifier when one is given, else Inception
    when it can be loaded, else the metrics are skipped. `none`: skipped (e.g. where Inception
    would be too slow, on a CPU).
    """
    if feature not in FEATURES:
        raise ConfigError(f"model.metrics.feature={feature!r} is not one of {', '.join(FEATURES)}")
    if feature == "none":
        return None, "FID/KID off (model.metrics.feature=none)"
    offline_fix = (
        "model.metrics.feature_ckpt=<a model=robust checkpoint of the same data, e.g. "
        "experiment=mnist_clean's last.ckpt>"
    )
    if feature == "classifier" and classifier is None:
        raise ConfigError(f"model.metrics.feature=classifier needs {offline_fix}")
    if classifier is not None and feature != "inception":
        extractor: nn.Module = ClassifierFeatures(classifier, image_shape)
        line = (
            f"FID/KID in the feature space of the classifier model.metrics.feature_ckpt "
            f"({type(classifier).__name__}, {extractor.num_features} features)"
        )
    else:
        inception, reason = inception_or_reason()
        if inception is None and feature == "inception":
            raise ConfigError(
                f"model.metrics.feature=inception needs the torch-fidelity package and its "
                f"Inception-v3 weights (downloaded on first use): {reason}. Offline, use "
                f"{offline_fix}"
            )
        if inception is None:
            return None, (
                f"FID/KID skipped: Inception-v3 is not available ({reason}); offline or for "
                f"digits, pass {offline_fix}"
            )
        extractor, line = inception, "FID/KID in the Inception-v3 feature space (torch-fidelity)"
    metrics = QualityMetrics(extractor, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size)
    return metrics, line
