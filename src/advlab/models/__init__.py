"""LightningModules of advlab."""

from advlab.models.advgan import AdvGAN
from advlab.models.gan import GAN
from advlab.models.robust_classifier import RobustClassifier

__all__ = ["GAN", "AdvGAN", "RobustClassifier"]
