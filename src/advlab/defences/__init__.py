"""Defences that wrap a trained classifier: randomized smoothing (certified L2 robustness)."""

from advlab.defences.smoothing import (
    ABSTAIN,
    Certificates,
    SmoothedClassifier,
    certified_radius,
    lower_confidence_bound,
    radius_cap,
    vote_is_significant,
)

__all__ = [
    "ABSTAIN",
    "Certificates",
    "SmoothedClassifier",
    "certified_radius",
    "lower_confidence_bound",
    "radius_cap",
    "vote_is_significant",
]
