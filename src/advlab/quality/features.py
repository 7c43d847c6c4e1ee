"""A classifier's penultimate layer as the feature extractor of FID/KID ("domain FID").

Inception-v3 features need downloaded weights and were trained on ImageNet photos; a classifier
trained on the same data (e.g. `experiment=mnist_clean`) is offline, fast, and sees what matters
for digits. Numbers in different feature spaces are not comparable: report which one you used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from advlab.checkpoints import load_classifier_net
from advlab.errors import ConfigError


class ClassifierFeatures(nn.Module):
    """Frozen `net.features_penultimate(x)` for images in [0, 1]; what torchmetrics calls `feature`.

    Args:
        net: a classifier with a `features_penultimate(x) -> (N, D)` method (advlab.nets).
        image_shape: (C, H, W) of the images it will see; a probe of that shape sizes the
            features and fails early when the classifier does not fit the images.
    """

    def __init__(self, net: nn.Module, image_shape: Sequence[int]) -> None:
        super().__init__()
        if not callable(getattr(net, "features_penultimate", None)):
            raise ConfigError(
                f"{type(net).__name__} has no features_penultimate(x): it cannot serve as the "
                f"feature extractor of FID/KID (advlab.nets classifiers have one)"
            )
        self.net = net.eval().requires_grad_(False)
        try:
            with torch.no_grad():
                probe = self.net.features_penultimate(torch.rand(2, *image_shape))
        except (RuntimeError, ValueError) as err:
            raise ConfigError(
                f"the feature extractor ({type(net).__name__}) does not take images of shape "
                f"{tuple(image_shape)}: {str(err).strip().splitlines()[0][:160]}"
            ) from err
        #: read by torchmetrics to size its state
        self.num_features = int(probe.shape[1])

    def train(self, mode: bool = True) -> ClassifierFeatures:
        """Always eval: BatchNorm statistics and dropout of the extractor must never change."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features_penultimate(x.float())


def load_classifier_features(
    ckpt_path: str | Path, image_shape: Sequence[int]
) -> ClassifierFeatures:
    """The network of a `model=robust` checkpoint, wrapped as a feature extractor on CPU."""
    _, net = load_classifier_net(ckpt_path, where="model.metrics.feature_ckpt")
    return ClassifierFeatures(net, image_shape)
