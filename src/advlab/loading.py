"""The classifier `eval.py` evaluates: an advlab checkpoint, any nn.Module from a config and a
state_dict, or a TorchScript file; optionally behind the normalization it expects.

Every model leaves here taking [0, 1] images and returning logits, so every epsilon means pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from torch import nn

from advlab.checkpoints import read_checkpoint
from advlab.errors import ConfigError
from advlab.models import RobustClassifier
from advlab.nets import Normalize

SOURCES = ("ckpt_path", "net", "torchscript")
#: prefixes of state_dict keys written by wrappers (DataParallel, Lightning modules)
WRAPPER_PREFIXES = ("module.", "model.", "net.")


def _is_set(value: Any) -> bool:
    """A path, or a `net` config that names a `_target_`."""
    if isinstance(value, Mapping):
        return bool(value.get("_target_"))
    return bool(value)


def check_one_source(cfg: Mapping[str, Any]) -> str:
    """Which of `SOURCES` the config sets; exactly one must be set."""
    given = [key for key in SOURCES if _is_set(cfg.get(key))]
    if len(given) != 1:
        raise ConfigError(
            "give exactly one model to evaluate: ckpt_path=<advlab .ckpt>, or "
            "net._target_=<pkg.module.Class> weights=<state_dict .pt>, or torchscript=<file.pt>"
            + (f" (got {', '.join(given)})" if given else "")
        )
    return given[0]


def load_model(
    cfg: Mapping[str, Any], device: torch.device, ckpt_path: str | None = None
) -> tuple[nn.Module, str]:
    """(the model in eval mode on `device`, a description of where it came from).

    Exactly one of `ckpt_path` (an advlab RobustClassifier checkpoint), `net` (+ `weights`) and
    `torchscript` must be set; `normalize: {mean, std}` puts a Normalize layer in front.
    """
    source = check_one_source(cfg)
    if source == "ckpt_path":
        path = ckpt_path or str(cfg["ckpt_path"])
        checkpoint = read_checkpoint(path, "ckpt_path")
        model: nn.Module = RobustClassifier.from_checkpoint_dict(checkpoint, path)
        described = str(Path(path).resolve())
    elif source == "net":
        model = _module_from_config(cfg["net"], cfg.get("weights"))
        described = f"{cfg['net'].get('_target_')} with weights {cfg.get('weights')}"
    else:
        model = _torchscript(str(cfg["torchscript"]), device)
        described = f"TorchScript {Path(str(cfg['torchscript'])).resolve()}"
    normalize = cfg.get("normalize")
    if normalize and (normalize.get("mean") or normalize.get("std")):
        model = normalized(model, normalize.get("mean"), normalize.get("std"))
        described += f", normalized inside (mean {list(normalize['mean'])})"
    return model.to(device).eval(), described


def normalized(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    """`model` behind (x - mean) / std: it sees what it was trained on, attacks see pixels."""
    if not mean or not std:
        raise ConfigError("normalize needs both mean and std, e.g. normalize.mean=[0.5]")
    return nn.Sequential(Normalize(list(mean), list(std)), model)


def _module_from_config(net: Mapping[str, Any], weights: str | None) -> nn.Module:
    """The network a (command-line) config names, with a state_dict read weights-only."""
    if "_target_" not in net:
        raise ConfigError("net needs a _target_, e.g. net._target_=torchvision.models.resnet18")
    try:
        module = hydra.utils.instantiate(net)
    except Exception as err:
        cause = err.__cause__ or err
        raise ConfigError(f"net: cannot build {net['_target_']}: {cause}") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"net: {net['_target_']} built a {type(module).__name__}, not a module")
    if weights:
        state = read_checkpoint(weights, "weights")
        state = state.get("state_dict", state)
        try:
            module.load_state_dict(_strip_wrappers(state, module))
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0][:200]
            raise ConfigError(f"weights={weights} do not fit {net['_target_']}: {first}") from None
    return module


def _strip_wrappers(state: Mapping[str, Any], module: nn.Module) -> dict[str, Any]:
    """Drop a wrapper's key prefix when the bare module's keys need it dropped."""
    expected = set(module.state_dict())
    for prefix in WRAPPER_PREFIXES:
        if not set(state) & expected and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _torchscript(path: str, device: torch.device) -> nn.Module:
    """A TorchScript archive: it runs its own TorchScript code (not arbitrary Python)."""
    if not Path(path).is_file():
        raise ConfigError(f"torchscript={path}: no file there")
    try:
        return torch.jit.load(path, map_location=device)
    except Exception as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else "unreadable"
        raise ConfigError(f"torchscript={path} is not a TorchScript file ({first})") from None
