"""LR schedulers from `_partial_` configs, told how many optimizer steps the run makes."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import hydra
import torch

LENGTH_ARGUMENTS = ("total_steps", "total_iters")  # OneCycleLR, LinearLR/PolynomialLR


def build_scheduler(cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, steps: int) -> Any:
    """The scheduler of `cfg` for `optimizer`. Its length argument, when it has one and the
    config leaves it out, is `steps`: a schedule then ends with the run whatever the data size."""
    make = hydra.utils.instantiate(cfg)
    func, keywords = getattr(make, "func", make), getattr(make, "keywords", {})
    parameters = inspect.signature(func).parameters
    length = {name: steps for name in LENGTH_ARGUMENTS if name in parameters}
    return make(optimizer=optimizer, **{k: v for k, v in length.items() if k not in keywords})
