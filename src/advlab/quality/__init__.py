"""Sample-quality metrics for generators (FID, KID, per-class agreement), offline if need be."""

from advlab.quality.classes import ClassAgreement
from advlab.quality.features import ClassifierFeatures, load_classifier_features
from advlab.quality.metrics import QualityMetrics, build_quality_metrics

__all__ = [
    "ClassAgreement",
    "ClassifierFeatures",
    "QualityMetrics",
    "build_quality_metrics",
    "load_classifier_features",
]
