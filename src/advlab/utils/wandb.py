"""W&B that works on a laptop with no account, and goes online by itself when there is one."""

from __future__ import annotations

import netrc
import os
import secrets
import socket
import string
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger

from advlab.errors import ConfigError
from advlab.utils.pylogger import get_logger, process_rank

log = get_logger(__name__)

WANDB_HOST = "api.wandb.ai"
RUN_ID_FILE = "wandb_run_id.txt"


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


def online_problem(timeout_s: float = 3.0) -> str | None:
    """Why W&B cannot go online from here (no API key, server unreachable), or None.

    Without this, wandb.init with a key but no network retries for about 100 s and then
    raises; without a key it asks for one or raises. A TCP connection to the server, with a
    timeout of a few seconds, tells the same thing quickly.
    """
    if not wandb_credentials_available():
        return "no API key (set WANDB_API_KEY or run `wandb login`)"
    url = urlparse(os.environ.get("WANDB_BASE_URL", f"https://{WANDB_HOST}"))
    host, port = url.hostname or WANDB_HOST, url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        return f"cannot reach {host}:{port} ({err.strerror or type(err).__name__})"
    return None


def run_id_for(save_dir: str | Path) -> str:
    """The W&B run id of a run dir: read from `<save_dir>/wandb_run_id.txt`, created once.

    A run resumed in the same dir (`ckpt_path=last`, a requeued SLURM job) thus continues the
    same W&B run instead of starting a new one. Only rank 0 writes the file.
    """
    path = Path(save_dir) / RUN_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    if process_rank() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id


def make_wandb_logger(
    mode: str = "auto", log_model: bool | str = False, **kwargs: Any
) -> WandbLogger:
    """A `WandbLogger` whose online/offline mode is resolved by `resolve_offline`; online
    without a key or without a reachable server falls back to offline with one warning.

    Checkpoint upload (`log_model`) needs a network: offline it is turned off with a warning
    instead of failing, and `wandb sync <run dir>/wandb/offline-run-*` uploads the run later.
    Without an explicit `id`, the run id is pinned to the run dir (`run_id_for`), and resumed.
    """
    if not kwargs.get("id") and kwargs.get("save_dir"):
        kwargs["id"] = run_id_for(kwargs["save_dir"])
        kwargs.setdefault("resume", "allow")
    offline = resolve_offline(mode)
    problem = None if offline else online_problem()
    if problem:
        log.warning(f"W&B cannot go online: {problem}; logging offline instead.")
        offline = True
    if offline and log_model:
        log.warning("W&B is offline: logger.wandb.log_model ignored (checkpoints stay on disk).")
        log_model = False
    if offline:
        log.info("W&B offline: upload later with `wandb sync <run dir>/wandb/offline-run-*`.")
    return WandbLogger(offline=offline, log_model=log_model, **kwargs)
