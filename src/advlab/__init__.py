"""advlab: a Lightning + Hydra template for adversarial machine learning."""

from advlab.utils.resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()
