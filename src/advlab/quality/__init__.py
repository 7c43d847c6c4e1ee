"""Sample-quality metrics for generators (FID, KID) in a feature space that works offline."""

from advlab.quality.features import ClassifierFeatures, load_classifier_features
from advlab.quality.metrics import QualityMetrics, build_quality_metrics

__all__ = [
    "ClassifierFeatures",
    "QualityMetrics",
    "build_quality_metrics",
    "load_classifier_features",
]
