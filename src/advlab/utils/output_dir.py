"""A Hydra callback that refuses an output dir it cannot write, in one line, before any job."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def unwritable_reason(folder: Path) -> str | None:
    """Why files cannot be written under `folder` (created if missing), or None if they can.

    Tries for real: `os.access` says yes to root even on a read-only filesystem.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return err.strerror or type(err).__name__
    return None


def _refuse_unwritable(key: str, folder: str) -> None:
    reason = unwritable_reason(Path(folder))
    if reason:
        print(
            f"advlab: error: {key}={folder} cannot be written ({reason}); pass a writable "
            f"{key}=<dir> or paths.log_dir=<dir>",
            file=sys.stderr,
        )
        raise SystemExit(2)


class CheckOutputDirWritable(Callback):
    """Hydra creates the run dir inside its own job code, where a read-only folder becomes a
    traceback; this checks the same folder first (configs/hydra/default.yaml installs it)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_unwritable("hydra.run.dir", str(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_unwritable("hydra.sweep.dir", str(config.hydra.sweep.dir))
