"""W&B that works on a laptop with no account, and goes online by itself when there is one."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from advlab.errors import ConfigError
from advlab.utils.pylogger import get_logger

log = get_logger(__name__)

WANDB_HOST = "api.wandb.ai"


def wandb_credentials_available() -> bool:
    """True when an API key is in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(netrc_path).authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError, PermissionError):
        return False


def resolve_offline(mode: str) -> bool:
    """Map `mode` (auto | online | offline) to WandbLogger's `offline` flag.

    `auto` is offline unless credentials exist, or WANDB_MODE says otherwise, so a fresh clone
    never blocks on a login prompt and never fails for lack of network.
    """
    if mode not in ("auto", "online", "offline"):
        raise ConfigError(f"logger.wandb.mode={mode!r} is not one of auto, online, offline")
    if mode != "auto":
        return mode == "offline"
    env_mode = os.environ.get("WANDB_MODE", "").lower()
    if env_mode in ("offline", "dryrun", "disabled"):
        return True
    if env_mode == "online":
        return False
    return not wandb_credentials_available()


def make_wandb_logger(
    mode: str = "auto", log_model: bool | str = False, **kwargs: Any
) -> WandbLogger:
    """A `WandbLogger` whose online/offline mode is resolved by `resolve_offline`.

    Checkpoint upload (`log_model`) needs a network: offline it is turned off with a warning
    instead of failing, and `wandb sync <run dir>/wandb/offline-run-*` uploads the run later.
    """
    offline = resolve_offline(mode)
    if offline and log_model:
        log.warning("W&B is offline: logger.wandb.log_model ignored (checkpoints stay on disk).")
        log_model = False
    if offline:
        log.info("W&B offline: upload later with `wandb sync <run dir>/wandb/offline-run-*`.")
    return WandbLogger(offline=offline, log_model=log_model, **kwargs)
