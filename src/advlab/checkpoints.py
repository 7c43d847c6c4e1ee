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
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import hydra
import torch
from hydra._internal.utils import _locate
from lightning.pytorch import LightningModule

from advlab.errors import AdvlabError, ConfigError
from advlab.utils.pylogger import get_logger

log = get_logger(__name__)

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
#: hyperparameters every GAN checkpoint has (model=gan and model=cgan)
GAN_HPARAMS = ("generator", "discriminator", "latent_dim", "image_shape")

Module = TypeVar("Module", bound=LightningModule)


def trust_targets(prefixes: Iterable[str] | None) -> None:
    """Also allow `_target_`s under these prefixes (e.g. `mypkg.`), for this process.

    Called with the `trusted_targets` config value at the start of train and eval; each call
    replaces the previous list, so one run's trust never leaks into the next.
    """
    if isinstance(prefixes, (str, bytes)):
        raise ConfigError(
            f"trusted_targets={prefixes} must be a list of prefixes, e.g. trusted_targets=[{prefixes}]"
        )
    found = [str(p).strip() for p in (prefixes or [])]
    if any(not p or p == "." for p in found):
        raise ConfigError(
            "trusted_targets has an empty prefix, which would trust every _target_; name "
            "packages or modules, e.g. trusted_targets=[mypkg.]"
        )
    _user_prefixes[:] = found


def _trusted(name: str) -> bool:
    """`mypkg.` and `mypkg` both trust `mypkg.Net`; neither trusts `mypkgevil.Net`."""
    for prefix in (*TRUSTED_PREFIXES, *_user_prefixes):
        whole = prefix.rstrip(".")
        if name == whole or name.startswith(whole + "."):
            return True
    return False


def _items(node: Any, at: str = "") -> Iterator[tuple[str, str, Any, Any]]:
    """(path of the parent, path, key, value) of every entry of nested dicts and lists."""
    if isinstance(node, Mapping):
        entries = [(f"{at}.{key}" if at else str(key), key, v) for key, v in node.items()]
    elif isinstance(node, (list, tuple)):
        entries = [(f"{at}[{index}]", index, v) for index, v in enumerate(node)]
    else:
        return
    for here, key, value in entries:
        yield at or "<root>", here, key, value
        yield from _items(value, here)


def check_targets(config: Any, where: str) -> None:
    """Refuse, in one line, anything in `config` that would build or run what is not trusted.

    Every `_target_` must be a trusted name that resolves to a class or function defined under
    a trusted prefix: `torch.nn.parallel.distributed.os.system` starts with `torch.nn.` but is
    `os.system`. Interpolations (`${...}`) are refused too: Hydra resolves them when it builds,
    so `torch.nn.${x}` could become any name after this check.
    """
    for at, here, key, value in _items(config):
        if isinstance(value, str) and "${" in value:
            raise ConfigError(
                f"{where}: {here} holds the interpolation {value[:80]!r}; advlab builds "
                f"nothing from a checkpoint whose configs are not plain values"
            )
        if key == "_target_":
            _check_target(str(value), at, where)


def _check_target(name: str, at: str, where: str) -> None:
    """Untrusted names are never imported: importing a module runs its code."""
    defined_in = ""
    if _trusted(name) and "._" not in name and "__" not in name:
        try:
            found = _locate(name)
        except Exception:
            raise ConfigError(
                f"{where}: {at} names _target_ {name}, which cannot be imported (a class "
                f"renamed or removed since the checkpoint was written?)"
            ) from None
        defined_in = f"{getattr(found, '__module__', '')}.{getattr(found, '__qualname__', '')}"
        if (inspect.isclass(found) or inspect.isroutine(found)) and _trusted(defined_in):
            return
    shown = f" (it is {defined_in})" if defined_in and defined_in != name else ""
    raise ConfigError(
        f"{where}: {at} names _target_ {name}{shown}, which advlab does not build from a "
        f"checkpoint. If you trust this file, allow it: trusted_targets=[{defined_in or name}]"
    )


def read_checkpoint(
    path: str | Path | None, where: str, map_location: Any = "cpu"
) -> dict[str, Any]:
    """The dict in `path`, read with `weights_only=True`; one ConfigError for any bad file."""
    if path in (None, "", "???"):
        raise ConfigError(f"{where} is required: the path of a .ckpt file")
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError(f"{where}={path}: no file there")
    if file.stat().st_size == 0:
        raise ConfigError(f"{where}={path} is not a PyTorch checkpoint (the file is empty)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: one line only
            warnings.simplefilter("ignore")
            checkpoint = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, not a torch file, or a pickle that calls something
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(err))
        if isinstance(err, pickle.UnpicklingError) and unsafe:
            raise ConfigError(
                f"{where}={path} refused: loading it would run code (it calls {unsafe.group(1)}); "
                f"advlab reads checkpoints with weights_only=True and ran none of it"
            ) from None
        operand = re.search(r"Unsupported operand \d+", str(err))  # e.g. a text file
        detail = f"{type(err).__name__}: {operand.group(0)}" if operand else _first_line(err)
        raise ConfigError(
            f"{where}={path} is not a PyTorch checkpoint (truncated or corrupt? {detail})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{where}={path} holds a {type(checkpoint).__name__}, not a checkpoint")
    return checkpoint


def lightning_parts(
    checkpoint: Mapping[str, Any],
    path: str | Path,
    where: str,
    required: Iterable[str],
    kind: str = "the expected",
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(hyperparameters, state_dict) of a Lightning checkpoint that has every `required`
    hyperparameter; else one line saying what the file holds instead."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping):
        raise ConfigError(f"{where}={path} is not a Lightning checkpoint (no state_dict)")
    hparams = checkpoint.get("hyper_parameters") or {}
    if not isinstance(hparams, Mapping) or not all(key in hparams for key in required):
        modules = sorted({str(key).split(".", 1)[0] for key in state})
        raise ConfigError(
            f"{where}={path} is not {kind} checkpoint (it holds {', '.join(modules) or 'nothing'})"
        )
    return dict(hparams), dict(state)


def _with_article(name: str) -> str:
    return f"{'an' if name[:1] in 'AEIOU' else 'a'} {name}"


def _first_line(err: BaseException) -> str:
    """`Type: first sentence` of an error: torch's and Lightning's run on for paragraphs."""
    sentence = re.split(r"(?<=[.!?])\s", (str(err).strip().splitlines() or [""])[0])[0]
    return f"{type(err).__name__}: {sentence[:160]}"


def _constructor_args(cls: type, hparams: dict[str, Any], where: str) -> dict[str, Any]:
    """`hparams` the constructor takes. Others (knobs removed since the file was written) are
    dropped as Lightning does, but with a warning: the file was trained with them."""
    parameters = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return hparams
    unknown = sorted(set(hparams) - set(parameters))
    if unknown:
        log.warning(f"{where}: ignoring hyperparameters {cls.__name__} no longer takes: {unknown}")
    return {key: value for key, value in hparams.items() if key in parameters}


class SafeCheckpointLoading:
    """`load_from_checkpoint` for advlab's LightningModules, through `read_checkpoint`.

    Replaces Lightning's, which unpickles and instantiates whatever the file says.
    `checkpoint_hparams` names the hyperparameters that identify the class's checkpoints.
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
        name = cls.__name__
        hparams, state = lightning_parts(
            checkpoint, path, where, cls.checkpoint_hparams, kind=_with_article(name)
        )
        check_targets(hparams, f"{where}={path}")  # the file's configs; overrides are the caller's
        hparams = _constructor_args(cls, {**hparams, **overrides}, f"{where}={path}")
        try:
            model = cls(**hparams)
        except AdvlabError as err:
            raise ConfigError(f"{where}={path}: {err}") from None
        except Exception as err:
            raise ConfigError(
                f"{where}={path}: cannot rebuild {_with_article(name)} from it ({_first_line(err)})"
            ) from None
        model.on_load_checkpoint(checkpoint)
        try:
            model.load_state_dict(state, strict=strict)
        except RuntimeError as err:
            raise ConfigError(
                f"{where}={path}: its weights do not fit the network it names ({_first_line(err)})"
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
    hparams, state = lightning_parts(
        checkpoint, path, where, CLASSIFIER_HPARAMS, kind="a RobustClassifier"
    )
    net_cfg = hparams["net"]
    if not isinstance(net_cfg, Mapping) or "_target_" not in net_cfg:
        raise ConfigError(f"{where}={path}: its net hyperparameter is not a network config")
    net_cfg = dict(net_cfg)
    check_targets({"net": net_cfg}, f"{where}={path}")
    weights = {key[len("net.") :]: value for key, value in state.items() if key.startswith("net.")}
    try:
        net = hydra.utils.instantiate(net_cfg)
        net.load_state_dict(weights)
    except Exception as err:
        raise ConfigError(
            f"{where}={path}: cannot rebuild its network ({_first_line(err)})"
        ) from None
    return net_cfg, net
