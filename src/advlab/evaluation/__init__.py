"""Robustness evaluation: attack suites over epsilons, sanity checks, reports."""

from advlab.evaluation.measure import AttackFailedError, AttackStats, attack_batch, attack_mode
from advlab.evaluation.robustness import RobustnessReport, evaluate_robustness
from advlab.evaluation.sanity import CheckResult, SanitySettings
from advlab.evaluation.suite import SuiteEntry, parse_suite

__all__ = [
    "AttackFailedError",
    "AttackStats",
    "CheckResult",
    "RobustnessReport",
    "SanitySettings",
    "SuiteEntry",
    "attack_batch",
    "attack_mode",
    "evaluate_robustness",
    "parse_suite",
]
