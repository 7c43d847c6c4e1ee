"""The one place advlab reads a checkpoint, and what it may build from one.

Two guards, because a checkpoint is a file from anywhere:
- `torch.load(weights_only=True)`: unpickling may only make tensors and plain values, so a
  pickle that would run code is refused before anything runs;
- a checkpoint's hyperparameters are configs that Hydra instantiates, so every `_target_` in
  them is checked before anything is built: advlab's own components, `torch.nn`, `torch.optim`,
  `torchvision.models` and torchattacks, plus prefixes the user trusts (`trusted_targets=`).
  Otherwise a `_target_` such as `torch.hub.load` would run a repository's code.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import hydra
import torch
from hydra._internal.utils import _locate
from lightning.pytorch import LightningModule

from advlab.errors import ConfigError

#: where the classes and functions a checkpoint may name are defined
TRUSTED_PREFIXES = (
    "advlab.nets.",
    "advlab.attacks.",
    "advlab.methods.",
    "torch.nn.",
    "torch.optim.",
    "torchvision.models.",
    "torchattacks.",
)
_user_prefixes: list[str] = []
#: hyperparameters every RobustClassifier checkpoint has (and GAN / AdvGAN ones do not)
CLASSIFIER_HPARAMS = ("net", "method")

Module = TypeVar("Module", bound=LightningModule)


def trust_targets(prefixes: Iterable[str] | None) -> None:
    """Also allow `_target_`s under these prefixes (e.g. `mypkg.`), for this process."""
    _user_prefixes[:] = [str(p) for p in (prefixes or [])]


def _trusted(name: str) -> bool:
    return any(name.startswith(p) for p in (*TRUSTED_PREFIXES, *_user_prefixes))


def _targets(node: Any, at: str) -> Iterator[tuple[str, Any]]:
    """(where, value) of every `_target_` in nested dicts and lists."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{at}.{key}" if at else str(key)
            if key == "_target_":
                yield at or "<root>", value
            else:
                yield from _targets(value, here)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _targets(value, f"{at}[{index}]")


def check_targets(config: Any, where: str) -> None:
    """Refuse, in one line, any `_target_` of `config` outside the trusted prefixes.

    The name must be trusted, and so must the module that defines the object it resolves to:
    `torch.nn.modules.module.os.system` starts with `torch.nn.` but is `os.system`.
    """
    for at, target in _targets(config, ""):
        name = str(target)
        defined_in = ""
        if _trusted(name) and "._" not in name and "__" not in name:
            try:
                found = _locate(name)
            except Exception:  # an unknown name: the builder says so in its own words
                continue
            defined_in = f"{getattr(found, '__module__', '')}.{getattr(found, '__name__', '')}"
            if (inspect.isclass(found) or inspect.isfunction(found)) and _trusted(defined_in):
                continue
        shown = f" (defined in {defined_in.rsplit('.', 1)[0]})" if defined_in else ""
        raise ConfigError(
            f"{where}: {at} names _target_ {name}{shown}, which advlab does not build from a "
            f"checkpoint. If you trust this file, allow it: trusted_targets=[{_prefix_of(name)}]"
        )


def _prefix_of(name: str) -> str:
    return name.split(".", 1)[0] + "." if "." in name else name


def read_checkpoint(
    path: str | Path | None, where: str, map_location: Any = "cpu"
) -> dict[str, Any]:
    """The dict in `path`, read with `weights_only=True`; one ConfigError for any bad file."""
    if path in (None, "", "???"):
        raise ConfigError(f"{where} is required: the path of a .ckpt file")
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError(f"{where}={path}: no file there")
    try:
        checkpoint = torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickling_reason(str(err))
        raise ConfigError(
            f"{where}={path} refused: reading it would run code ({reason}); advlab reads "
            f"checkpoints with weights_only=True, which allows tensors and plain values only"
        ) from None
    except Exception as err:  # truncated, empty, not a torch file: the same to the user
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else "unreadable"
        raise ConfigError(
            f"{where}={path} is not a readable PyTorch checkpoint (truncated or corrupt? "
            f"{type(err).__name__}: {first})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{where}={path} holds a {type(checkpoint).__name__}, not a checkpoint")
    return checkpoint


def _unpickling_reason(message: str) -> str:
    """torch's multi-paragraph refusal -> the line naming the unsafe global."""
    for line in message.splitlines():
        if "Unsupported global" in line or "GLOBAL" in line:
            return line.strip().removeprefix("WeightsUnpickler error: ")[:200]
    return message.strip().splitlines()[0][:200] if message.strip() else "unpickling refused"


def lightning_parts(
    checkpoint: Mapping[str, Any], path: str | Path, where: str, required: Iterable[str]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(hyperparameters, state_dict) of a Lightning checkpoint that has every `required`
    hyperparameter; else one line saying what the file holds instead."""
    if "state_dict" not in checkpoint:
        raise ConfigError(f"{where}={path} is not a Lightning checkpoint (no state_dict)")
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    missing = [key for key in required if key not in hparams]
    if missing:
        modules = sorted({key.split(".", 1)[0] for key in checkpoint["state_dict"]})
        raise ConfigError(
            f"{where}={path} is not the checkpoint expected here: it lacks the "
            f"hyperparameters {', '.join(missing)} (it holds {', '.join(modules) or 'nothing'})"
        )
    return hparams, checkpoint["state_dict"]


class SafeCheckpointLoading:
    """`load_from_checkpoint` for advlab's LightningModules, through `read_checkpoint`.

    Replaces Lightning's, which unpickles and instantiates whatever the file says. `required`
    names the hyperparameters that identify the class's checkpoints.
    """

    checkpoint_hparams: tuple[str, ...] = ()

    @classmethod
    def load_from_checkpoint(
        cls: type[Module],
        checkpoint_path: str | Path,
        map_location: Any = None,
        strict: bool = True,
        where: str = "ckpt_path",
        **overrides: Any,
    ) -> Module:
        """Read `checkpoint_path` safely and rebuild the module; `overrides` replace hparams."""
        checkpoint = read_checkpoint(checkpoint_path, where)
        return cls.from_checkpoint_dict(
            checkpoint, checkpoint_path, map_location, strict, where, **overrides
        )

    @classmethod
    def from_checkpoint_dict(
        cls: type[Module],
        checkpoint: dict[str, Any],
        path: str | Path,
        map_location: Any = None,
        strict: bool = True,
        where: str = "ckpt_path",
        **overrides: Any,
    ) -> Module:
        """The module of an already-read checkpoint (so a caller reads the file once)."""
        hparams, state = lightning_parts(checkpoint, path, where, cls.checkpoint_hparams)
        hparams.update(overrides)
        check_targets(hparams, f"{where}={path}")
        model = cls(**hparams)
        model.on_load_checkpoint(checkpoint)
        try:
            model.load_state_dict(state, strict=strict)
        except RuntimeError as err:
            raise ConfigError(
                f"{where}={path}: its weights do not fit the network it names "
                f"({str(err).strip().splitlines()[0][:200]})"
            ) from None
        if map_location is not None:
            model.to(map_location if not callable(map_location) else "cpu")
        return model


def load_classifier_net(
    path: str | Path | None, where: str
) -> tuple[dict[str, Any], torch.nn.Module]:
    """(net config, net with its trained weights, on the CPU) of a `model=robust` checkpoint.

    Only the network: no method, attacks or optimizer are built. Used wherever a trained
    classifier serves as a fixed part of something else (AdvGAN's target, FID features).
    """
    if path in (None, "", "???"):
        raise ConfigError(
            f"{where} is required: a model=robust checkpoint, e.g. "
            f"logs/train/runs/<run>/checkpoints/last.ckpt of experiment=mnist_clean"
        )
    checkpoint = read_checkpoint(path, where)
    hparams, state = lightning_parts(checkpoint, path, where, CLASSIFIER_HPARAMS)
    net_cfg = dict(hparams["net"])
    check_targets(net_cfg, f"{where}={path}")
    weights = {key[len("net.") :]: value for key, value in state.items() if key.startswith("net.")}
    try:
        net = hydra.utils.instantiate(net_cfg)
        net.load_state_dict(weights)
    except Exception as err:
        raise ConfigError(
            f"{where}={path}: cannot rebuild its network ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0][:200]})"
        ) from None
    return net_cfg, net
