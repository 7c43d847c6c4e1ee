"""`advlab.evaluate(model, data, eps=...)`: the robustness report of `python eval.py`, for any
`nn.Module` in a Python session or notebook.

The attacks come from the project's own configs (`configs/eval.yaml`, its `attack/` and `suite/`
groups), composed with the threat model given here, so the API and the command line run the same
evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch import LightningDataModule
from omegaconf import DictConfig, OmegaConf
from torch import nn

from advlab.errors import ConfigError
from advlab.evaluation import RobustnessReport, SanitySettings, evaluate_robustness, parse_suite
from advlab.evaluation.report import write_report
from advlab.evaluation.runner import Batch
from advlab.evaluation.suite import make_entry
from advlab.threat_model import ThreatModel

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
HEADLINE = "headline"


def evaluate(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor] | Iterable[Batch] | LightningDataModule,
    *,
    eps: float | None = None,
    norm: str = "Linf",
    attack: str = "autoattack",
    suite: str = "default",
    overrides: Sequence[str] = (),
    num_samples: int = 1000,
    batch_size: int = 500,
    device: str | torch.device | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
) -> RobustnessReport:
    """Evaluate `model` (images in [0, 1] -> logits) and return the report.

    Args:
        model: any classifier; wrap it in `advlab.loading.normalized` if it expects normalized
            inputs.
        data: `(images, labels)` tensors, an iterable of such batches (a DataLoader), or a
            DataModule (its test split; its threat model is the default budget).
        eps, norm: the threat model (required unless `data` is an advlab DataModule).
        attack: the headline attack, an `attack/` config name (`autoattack`, `autoattack_fast`).
        suite: a `suite/` config name; `overrides` are Hydra overrides of the eval config, e.g.
            `["suite.eps_multiples=[0,1]", "sanity.tolerance=0.02"]`.
        num_samples: the first N images (-1: all); batch_size: images per attack call.
        device: where to attack (default: the model's device).
        seed: seed of the attacks' random starts.
        out_dir: also write report.json, report.md and robustness_curve.png there.

    Returns the `RobustnessReport`: `.verdict` first, then `.headline` (a run: `.robust_acc`,
    `.label`, `.eps`) and `.to_json()`.
    """
    threat = _threat_model(data, eps, norm)
    cfg = _eval_config(threat, attack, suite, overrides)
    device = torch.device(device) if device is not None else _device_of(model)
    batches = _batches(data, num_samples, batch_size, device)
    model = model.to(device).eval()
    entries = parse_suite(cfg.suite, where="suite")
    attack_cfg = OmegaConf.to_container(cfg.attack, resolve=True)
    entries.append(make_entry(HEADLINE, attack_cfg, [threat.eps], "attack"))
    settings = SanitySettings(**OmegaConf.to_container(cfg.sanity, resolve=True))
    torch.manual_seed(seed)
    report = evaluate_robustness(
        model, batches, entries, settings, budget=threat.eps, headline=HEADLINE
    )
    if out_dir is not None:
        meta = {"model": type(model).__name__, "threat_model": str(threat)}
        write_report(report, Path(out_dir), meta, norm=threat.norm)
    return report


def _threat_model(data: Any, eps: float | None, norm: str) -> ThreatModel:
    if eps is not None:
        return ThreatModel.from_config({"norm": norm, "eps": eps}, where="evaluate(norm, eps)")
    threat = getattr(data, "threat_model", None)
    if threat is None:
        raise ConfigError("evaluate() needs eps= (and norm=), e.g. eps=8/255 for CIFAR-10")
    return threat


def _eval_config(threat: ThreatModel, attack: str, suite: str, overrides: Sequence[str]):
    if not CONFIG_DIR.is_dir():
        raise ConfigError(f"advlab.evaluate reads the project's configs, not found at {CONFIG_DIR}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg: DictConfig = compose(
            "eval",
            overrides=[
                f"attack={attack}", f"suite={suite}", f"data.threat_model.norm={threat.norm}",
                f"data.threat_model.eps={threat.eps}", "ckpt_path=unused", *overrides,
            ],
        )  # fmt: skip
    GlobalHydra.instance().clear()
    return cfg


def _device_of(model: nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def _batches(data: Any, num_samples: int, batch_size: int, device: torch.device) -> list[Batch]:
    if isinstance(data, LightningDataModule):
        data.prepare_data()
        data.setup("test")
        data = (data.on_after_batch_transfer(b, 0) for b in data.test_dataloader())
    elif isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        data = [data]
    images, labels = zip(*((x, y) for x, y in data), strict=True)
    x, y = torch.cat(images), torch.cat(labels)
    if num_samples >= 0:
        x, y = x[:num_samples], y[:num_samples]
    if len(y) == 0:
        raise ConfigError("evaluate() got no images")
    if x.min() < 0 or x.max() > 1:
        raise ConfigError(
            f"evaluate() needs images in [0, 1] (got [{x.min():.3g}, {x.max():.3g}]): normalize "
            f"inside the model (advlab.loading.normalized), never in the data"
        )
    x, y = x.float().to(device), y.long().to(device)
    return list(zip(x.split(batch_size), y.split(batch_size), strict=True))
