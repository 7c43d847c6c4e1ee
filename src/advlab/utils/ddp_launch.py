"""DDP child processes that re-run exactly this Hydra job, also inside a multirun.

Lightning starts the ranks > 0 of `strategy=ddp` by re-running the script with `sys.argv`. In a
multirun that argv holds `-m` and the whole sweep, so each child starts a sweep of its own
(a second sweep dir, rank 1 training other jobs). `job_command` gives the child this job's own
overrides and its output dir instead; `use_job_command_for_ddp_children` installs it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd, to_absolute_path
from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
from lightning.pytorch.strategies.launchers import subprocess_script as trainer_launcher

import __main__
from advlab.utils.pylogger import get_logger

log = get_logger(__name__)

# Each launcher module looks the function up in its own globals when it starts a child: the
# Trainer's module imported it by name, so patching only Fabric's copy changes nothing for it.
LAUNCHER_MODULES: tuple[ModuleType, ...] = (trainer_launcher, fabric_launcher)
HOOK = "_hydra_subprocess_cmd"
# what Lightning's launcher writes into os.environ for the processes it starts
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def job_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command and cwd that start rank `local_rank` of the current Hydra job."""
    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    if hydra_cfg.job.config_name:
        command += ["--config-name", hydra_cfg.job.config_name]
    command += list(hydra_cfg.overrides.task)
    command += [
        "hydra.mode=RUN",  # a config may set MULTIRUN itself (hparams_search/*.yaml does)
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name={hydra_cfg.job.name}_ddp_rank_{local_rank}",
        "hydra.output_subdir=null",  # rank 0 already wrote .hydra/
    ]
    log.info(f"DDP rank {local_rank} starts: {' '.join(command)}")
    return command, get_original_cwd()


def use_job_command_for_ddp_children() -> None:
    """Make Lightning start DDP children with `job_command` (no-op outside a Hydra app).

    Fails loudly when a Lightning upgrade moves the hook, rather than silently letting every
    child of a multirun run the whole sweep again.
    """
    if not HydraConfig.initialized():
        return
    for module in LAUNCHER_MODULES:
        if not hasattr(module, HOOK):
            raise RuntimeError(
                f"{module.__name__}.{HOOK} is gone (Lightning upgrade?): "
                "advlab.utils.ddp_launch must patch the function that now builds DDP child commands"
            )
        setattr(module, HOOK, job_command)


@contextmanager
def separate_ddp_jobs() -> Iterator[None]:
    """Leave no DDP state behind for the next job of a multirun in this process.

    Lightning's launcher sets LOCAL_RANK & co. in os.environ and keeps the process group. The
    next job would then take itself for a process started by someone else, start no children,
    and wait on the previous job's ranks, which have exited. Restoring the environment as it was
    before the job (a SLURM or torchrun launch keeps its own variables) and closing the group
    makes each job start its ranks afresh.
    """
    saved = {name: os.environ.get(name) for name in LAUNCH_ENV}
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
