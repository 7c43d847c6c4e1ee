"""A python logger whose messages are printed by rank 0 only (no duplicate lines under DDP)."""

import logging

from lightning.pytorch.utilities import rank_zero_only


def get_logger(name: str = __name__) -> logging.Logger:
    """Return a logger whose info/warning/error methods run on global rank 0 only."""
    logger = logging.getLogger(name)
    for level in ("debug", "info", "warning", "error", "exception", "fatal", "critical"):
        setattr(logger, level, rank_zero_only(getattr(logger, level)))
    return logger
