"""Loggers for multi-process runs: rank-0-only messages, and every log line tagged with its rank."""

import logging
import os

from lightning.pytorch.utilities import rank_zero_only


def get_logger(name: str = __name__) -> logging.Logger:
    """Return a logger whose info/warning/error methods run on global rank 0 only."""
    logger = logging.getLogger(name)
    for level in ("debug", "info", "warning", "error", "exception", "fatal", "critical"):
        setattr(logger, level, rank_zero_only(getattr(logger, level)))
    return logger


def process_rank() -> int:
    """Global rank from the launcher's environment (Lightning, torchrun, SLURM); 0 otherwise."""
    for variable in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(variable)
        if value is not None and value.isdigit():
            return int(value)
    return 0


class RankFilter(logging.Filter):
    """Adds `%(rank)s` to every record, so the lines of different processes can be told apart.

    Used by the `hydra/job_logging` formatter (configs/hydra/default.yaml).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = process_rank()
        return True
