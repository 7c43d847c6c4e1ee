"""Networks from configs (outside `advlab.nets`, which imports nothing else of advlab)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra
from omegaconf import DictConfig
from torch import nn

from advlab.attacks.build import as_plain_dict
from advlab.errors import ConfigError

ConfigLike = Mapping[str, Any] | DictConfig | None


def plain_config(cfg: ConfigLike) -> dict[str, Any] | None:
    """What goes into the checkpoint, so reloading needs no Hydra state."""
    return None if cfg is None else as_plain_dict(cfg)


def build_net(cfg: ConfigLike) -> nn.Module:
    """The network of `model.net`; a constructor's complaint becomes one line."""
    cfg = plain_config(cfg)
    if not cfg or "_target_" not in cfg:
        raise ConfigError("model.net needs a _target_ (e.g. advlab.nets.SmallCNN)")
    try:
        return hydra.utils.instantiate(cfg)
    except Exception as err:  # Hydra wraps the constructor's error; its last cause says why
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        reason = " ".join(str(cause).split())[:200]
        raise ConfigError(f"model.net: cannot build {cfg['_target_']}: {reason}") from None


def num_classes_of(net: nn.Module) -> int:
    """The net's `num_classes`, else the width of its last linear layer."""
    declared = getattr(net, "num_classes", None)
    if declared:
        return int(declared)
    linear = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ConfigError("cannot tell the number of classes of model.net (no nn.Linear layer)")
    return linear[-1].out_features
