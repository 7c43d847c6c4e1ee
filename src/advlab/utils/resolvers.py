"""OmegaConf resolvers the configs use, registered when advlab is imported.

Attack step sizes are written as fractions of the threat model's budget (`alpha:
${mul:0.25,${data.threat_model.eps}}`), so they follow the budget from dataset to dataset.
"""

from __future__ import annotations

from omegaconf import OmegaConf


def _mul(*factors: float) -> float:
    product = 1.0
    for factor in factors:
        product *= float(factor)
    return product


def _div(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator)


def register_resolvers() -> None:
    """`${mul:a,b,...}` (a product) and `${div:a,b}` (a / b); safe to call more than once."""
    OmegaConf.register_new_resolver("mul", _mul, replace=True)
    OmegaConf.register_new_resolver("div", _div, replace=True)
