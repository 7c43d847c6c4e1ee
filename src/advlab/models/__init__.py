"""LightningModules of advlab."""

from advlab.models.robust_classifier import RobustClassifier

__all__ = ["RobustClassifier"]
