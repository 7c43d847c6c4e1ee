"""advlab: a Lightning + Hydra template for adversarial machine learning."""

from typing import Any

from advlab.utils.resolvers import register_resolvers

__version__ = "0.1.0"
__all__ = ["evaluate"]

register_resolvers()


def __getattr__(name: str) -> Any:
    """`advlab.evaluate` without importing the evaluation stack on every `import advlab`."""
    if name == "evaluate":
        from advlab.api import evaluate

        return evaluate
    raise AttributeError(f"module 'advlab' has no attribute {name!r}")
