"""advlab: a Lightning + Hydra template for adversarial machine learning."""

__version__ = "0.1.0"
