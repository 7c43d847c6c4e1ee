"""A suite: attacks from `attack/` configs, each run at a list of epsilons.

Config shape (`configs/suite/*.yaml`)::

    eps: ${data.threat_model.eps}          # the threat model's budget
    eps_multiples: [0.0, 0.5, 1.0]         # every attack's epsilons, in multiples of eps
    attacks:
      pgd: {attack: <an attack/ config>}
      square: {attack: ..., eps_multiples: [1.0]}   # its own list (optional)

Instead of `eps_multiples`, a suite or an entry may list absolute `epsilons: [0.1, 0.3]`.
Multiples keep one suite right for every dataset: on CIFAR-10 the same file attacks at 8/255.

An attack's config is written for one budget, its own `eps`. At another epsilon the step size
keeps its ratio to the budget (`alpha_at(e) = alpha * e / eps`): PGD-10 with Madry's 2.5 * eps /
steps, or FGSM-RS with 1.25 * eps, stays that recipe at every epsilon.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig
from torch import nn

from advlab.attacks import attack_norm, build_attack
from advlab.attacks.build import as_plain_dict, instantiate_attack, validate_attack_config
from advlab.errors import ConfigError
from advlab.threat_model import check_budget

#: attack arguments that are step sizes: scaled with the budget
STEP_SIZE_KEYS = ("alpha",)


@dataclass(frozen=True)
class SuiteEntry:
    """One attack of a suite and the epsilons it runs at."""

    name: str
    attack: dict[str, Any]
    epsilons: tuple[float, ...]

    @property
    def norm(self) -> str:
        return attack_norm(self.attack)

    @property
    def label(self) -> str:
        return describe_attack(self.attack)


def check_epsilon(eps: Any, norm: str, where: str) -> float:
    """An epsilon of the suite: Linf in [0, 1] (pixel units), L2 >= 0. 0 means "no attack room"."""
    return check_budget(eps, norm, f"{where}: epsilon", allow_zero=True)


def make_entry(name: str, attack: Mapping[str, Any], epsilons: Any, where: str) -> SuiteEntry:
    """One validated entry; `epsilons` None means the attack's own eps."""
    attack = validate_attack_config(attack, where=f"{where}.attack")
    if "eps" not in attack:
        raise ConfigError(
            f"{where}: {attack['_target_']} has no eps (an unbounded attack such as CW "
            f"cannot be scored at an epsilon)"
        )
    if epsilons is None:
        epsilons = [attack["eps"]]
    if isinstance(epsilons, (int, float)):
        epsilons = [epsilons]
    values = tuple(sorted({check_epsilon(e, attack_norm(attack), where) for e in epsilons}))
    if not values:
        raise ConfigError(f"{where}.epsilons is empty")
    return SuiteEntry(str(name), attack, values)


def _epsilons(spec: Mapping[str, Any], eps: Any, where: str) -> list[float] | None:
    """The absolute epsilons `spec` asks for (None: it names none)."""
    if "epsilons" in spec and "eps_multiples" in spec:
        raise ConfigError(f"{where}: give epsilons or eps_multiples, not both")
    if "eps_multiples" in spec:
        if eps is None:
            raise ConfigError(f"{where}.eps_multiples needs the suite's eps (the threat budget)")
        multiples = spec["eps_multiples"]
        if isinstance(multiples, (int, float)):
            multiples = [multiples]
        return [round(float(eps) * float(m), 10) for m in multiples]
    return spec.get("epsilons")


def parse_suite(cfg: Mapping[str, Any] | DictConfig, where: str = "suite") -> list[SuiteEntry]:
    """Validate a suite config (shape in the module docstring) before any model exists."""
    cfg = as_plain_dict(cfg)
    attacks = cfg.get("attacks") or {}
    if not isinstance(attacks, Mapping) or not attacks:
        raise ConfigError(f"{where}.attacks must map names to {{attack: ..., epsilons: [...]}}")
    default = _epsilons(cfg, cfg.get("eps"), where)
    entries = []
    for name, spec in attacks.items():
        here = f"{where}.attacks.{name}"
        if not isinstance(spec, Mapping) or not isinstance(spec.get("attack"), Mapping):
            raise ConfigError(f"{here} needs an `attack` (an attack/ config with a _target_)")
        epsilons = _epsilons(spec, cfg.get("eps"), here)
        entries.append(make_entry(str(name), spec["attack"], epsilons or default, here))
    return entries


def attack_config_at(
    cfg: Mapping[str, Any], eps: float, steps_factor: float = 1.0
) -> dict[str, Any]:
    """`cfg` moved to budget `eps` (step sizes keep their ratio), with steps x `steps_factor`."""
    cfg = dict(cfg)
    reference = cfg.get("eps")
    if reference:
        for key in STEP_SIZE_KEYS:
            if key in cfg:
                cfg[key] = cfg[key] * eps / reference
    cfg["eps"] = eps
    if steps_factor != 1.0:
        if "steps" not in cfg:
            raise ConfigError(f"{cfg['_target_']} has no `steps` to multiply")
        cfg["steps"] = round(cfg["steps"] * steps_factor)
    return cfg


def build_attack_at(cfg: Mapping[str, Any], model: nn.Module, eps: float, where: str) -> Any:
    """Build `cfg` against `model` at budget `eps`; eps 0 is allowed (the sanity check uses it)."""
    scaled = attack_config_at(cfg, eps)
    if eps > 0:
        return build_attack(scaled, model, where=where)
    validate_attack_config(cfg, where=where)  # checked at its own budget; 0 is allowed on purpose
    return instantiate_attack(scaled, model, where=f"{where} (at eps 0)")


#: attacks that never use the model's gradients (their search is what exposes masking)
GRADIENT_FREE_TARGETS = ("torchattacks.Square", "advlab.attacks.advgan.AdvGANAttack")
#: AutoAttack versions whose ensemble includes Square
AUTOATTACK_WITH_SQUARE = ("standard", "plus")


def has_gradient_free_part(cfg: Mapping[str, Any]) -> bool:
    """Whether the attack is, or contains, a gradient-free search (Square in AutoAttack)."""
    target = str(cfg.get("_target_", ""))
    if target in GRADIENT_FREE_TARGETS:
        return True
    if target.endswith("OfficialAutoAttack") or target == "torchattacks.AutoAttack":
        version = cfg.get("version", "standard")
        return version in AUTOATTACK_WITH_SQUARE or "square" in (cfg.get("attacks") or [])
    return False


def describe_attack(cfg: Mapping[str, Any]) -> str:
    """A short human label: `PGD-40`, `FGSM`, `Square-1000`, `AutoAttack (apgd-ce+apgd-t)`."""
    name = str(cfg.get("_target_", "?")).rsplit(".", 1)[-1]
    if name == "OfficialAutoAttack":
        which = "+".join(cfg.get("attacks") or []) or cfg.get("version", "standard")
        return f"AutoAttack ({which})"
    if "steps" in cfg:
        return f"{name}-{cfg['steps']}"
    if "n_queries" in cfg:
        return f"{name}-{cfg['n_queries']}"
    return name


def format_eps(eps: float) -> str:
    """Stable, short text for an epsilon in metric names and tables (0.3, 0.03137)."""
    return f"{eps:.4g}"


def total_runs(entries: Sequence[SuiteEntry]) -> int:
    return sum(len(entry.epsilons) for entry in entries)


def runs(entries: Iterable[SuiteEntry]) -> Iterable[tuple[SuiteEntry, float]]:
    for entry in entries:
        for eps in entry.epsilons:
            yield entry, eps
