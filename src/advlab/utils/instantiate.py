"""Build lists of callbacks and loggers from their config groups."""

from __future__ import annotations

from typing import Any

import hydra
from hydra.errors import InstantiationException
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from advlab.errors import AdvlabError, ConfigError


def instantiate(cfg: Any, *args: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, but a user error raised inside a constructor surfaces as itself.

    Hydra wraps every constructor exception in InstantiationException, once per level of nesting
    (a network inside the model: twice); for an AdvlabError the message is already the one line
    the user needs.
    """
    try:
        return hydra.utils.instantiate(cfg, *args, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, AdvlabError):
            raise cause from None
        raise


def _instantiate_each(group: DictConfig | None, kind: type, group_name: str) -> list:
    """Instantiate every entry of a group that has a `_target_`; empty or None gives []."""
    objects = []
    if not group:
        return objects
    if not isinstance(group, DictConfig):
        raise ConfigError(f"{group_name} must be a mapping of name -> config, got {group!r}")
    for name, entry in group.items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            obj = instantiate(entry)
            if not isinstance(obj, kind):
                raise ConfigError(
                    f"{group_name}.{name} built a {type(obj).__name__}, not a {kind.__name__}"
                )
            objects.append(obj)
    return objects


def instantiate_callbacks(callbacks_cfg: DictConfig | None) -> list[Callback]:
    """Callbacks from the `callbacks` group (`callbacks=none` gives none)."""
    return _instantiate_each(callbacks_cfg, Callback, "callbacks")


def instantiate_loggers(logger_cfg: DictConfig | None) -> list[Logger]:
    """Loggers from the `logger` group (`logger=none` gives none)."""
    return _instantiate_each(logger_cfg, Logger, "logger")
