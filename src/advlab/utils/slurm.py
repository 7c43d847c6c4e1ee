"""Small helpers for SLURM configs."""

from __future__ import annotations

import signal

from advlab.errors import ConfigError


def signal_named(name: str) -> signal.Signals:
    """`SIGUSR2` -> signal.SIGUSR2, so YAML can name the requeue signal."""
    try:
        return signal.Signals[name]
    except KeyError:
        raise ConfigError(f"unknown signal {name!r}, e.g. SIGUSR1, SIGUSR2, SIGTERM") from None
