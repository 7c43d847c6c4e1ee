"""Helpers for the entry points: instantiation, logging per rank, W&B."""

from advlab.utils.instantiate import instantiate, instantiate_callbacks, instantiate_loggers
from advlab.utils.pylogger import get_logger

__all__ = ["get_logger", "instantiate", "instantiate_callbacks", "instantiate_loggers"]
