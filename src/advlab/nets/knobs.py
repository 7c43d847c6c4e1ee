"""Checks of `model.net.*` values shared by the networks' constructors.

Each raises ConfigError, so `train.py` prints the one line instead of torch's or Hydra's wrapped
error (or, for a flag, silently accepting any truthy string).
"""

from __future__ import annotations

from typing import Any

from advlab.errors import ConfigError


def check_dropout(dropout: float) -> None:
    """A dropout probability the network can train with: 1.0 would zero every activation."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.net.dropout must be in [0, 1), got {dropout}")


def check_flag(name: str, value: Any) -> None:
    """A YAML boolean: `batch_norm=maybe` would otherwise switch the layers on as a truthy string."""
    if not isinstance(value, bool):
        raise ConfigError(f"model.net.{name} must be true or false, got {value!r}")
