"""DDP child processes that re-run exactly this Hydra job, also inside a multirun.

Lightning starts the ranks > 0 of `strategy=ddp` by re-running the script with `sys.argv`. In a
multirun that argv holds `-m` and the whole sweep, so each child starts a sweep of its own
(a second sweep dir, rank 1 training other jobs). `job_command` gives the child this job's own
overrides and its output dir instead; `use_job_command_for_ddp_children` installs it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd, to_absolute_path
from lightning.fabric.strategies.launchers import subprocess_script

import __main__


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
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name={hydra_cfg.job.name}_ddp_rank_{local_rank}",
        "hydra.output_subdir=null",  # rank 0 already wrote .hydra/
    ]
    return command, get_original_cwd()


def use_job_command_for_ddp_children() -> None:
    """Make Lightning start DDP children with `job_command` (no-op outside a Hydra app)."""
    if HydraConfig.initialized():
        subprocess_script._hydra_subprocess_cmd = job_command
