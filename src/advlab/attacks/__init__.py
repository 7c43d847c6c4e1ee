"""Attacks built from config. One contract everywhere: `attack(x, y) -> x_adv`, x in [0, 1]."""

from advlab.attacks.build import attack_name, attack_norm, build_attack, check_within_budget
from advlab.attacks.schedule import EpsilonSchedule

__all__ = ["EpsilonSchedule", "attack_name", "attack_norm", "build_attack", "check_within_budget"]
