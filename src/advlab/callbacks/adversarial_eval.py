"""Attack a fixed validation subset every N epochs with a suite, log the numbers and pictures."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from advlab.callbacks.adversarial_media import adversarial_strips
from advlab.callbacks.validation_share import ValidationShareCallback
from advlab.errors import ConfigError
from advlab.evaluation.measure import AttackOutcome, AttackStats
from advlab.evaluation.runner import Batch, predict, run_attack
from advlab.evaluation.suite import SuiteEntry, format_eps, parse_suite
from advlab.utils import get_logger

log = get_logger(__name__)

LOGGED = ("robust_acc", "success_rate", "linf_mean", "linf_max", "l2_mean", "l2_max", "seconds")


class AdversarialEvalCallback(ValidationShareCallback):
    """Robust accuracy per attack and epsilon on the first `num_samples` validation images.

    The images are taken from the validation batches as they pass, so no extra data loading
    happens. Under DDP, Lightning deals validation items to ranks round-robin (rank r gets items
    r, r + W, ...), so each rank keeps its share of the first `num_samples`, attacks only those,
    and the counts are gathered and summed: the logged accuracy is sum(correct) / sum(count),
    exactly the single-process number. Pictures and files come from rank 0 only.

    It runs in `on_validation_epoch_end`; weight-averaging callbacks (EMA) swap their weights
    back in that hook, so list this callback before them (callbacks/default.yaml does).

    Logged per attack and epsilon, as `<prefix>/<attack>/eps<eps>/<name>`: robust_acc,
    success_rate (share of clean-correct images the attack broke), linf_mean/max and l2_mean/max
    of the perturbations, seconds; plus `<prefix>/clean_acc`, `<prefix>/seconds` and
    `<prefix>/epoch_share` (this callback's share of the epoch's wall time).

    Args:
        suite: `{epsilons: [...], attacks: {name: {attack: <attack/ config>, epsilons?: [...]}}}`
            (see `advlab.evaluation.suite`).
        every_n_epochs: attack after every N-th epoch's validation.
        num_samples: validation images attacked (the first ones of the fixed validation split).
        batch_size: images per attack call.
        num_images: images per W&B grid (0: no grids); one grid per attack, at its largest eps.
        save_batches: also save every attacked batch as `.pt` (x, x_adv, y, predictions) under
            `save_dir/epoch_XXX/`, e.g. for transfer attacks.
        save_dir: folder for `save_batches`.
        prefix: metric-name prefix.
        seed: seed of the attacks' random starts. The attacks draw from a forked RNG, so
            switching this callback on or off does not change the training run, and every
            epoch is attacked with the same random starts.
    """

    def __init__(
        self,
        suite: Mapping[str, Any],
        every_n_epochs: int = 1,
        num_samples: int = 128,
        batch_size: int = 128,
        num_images: int = 8,
        save_batches: bool = False,
        save_dir: str | None = None,
        prefix: str = "adv",
        seed: int = 0,
    ) -> None:
        super().__init__(num_samples)
        where = "callbacks.adversarial_eval"
        for name, value in (("every_n_epochs", every_n_epochs), ("num_samples", num_samples),
                            ("batch_size", batch_size)):  # fmt: skip
            if value < 1:
                raise ConfigError(f"{where}.{name} must be >= 1, got {value}")
        if save_batches and not save_dir:
            raise ConfigError(f"{where}.save_batches=true needs {where}.save_dir")
        self.entries: list[SuiteEntry] = parse_suite(suite, where=f"{where}.suite")
        self.every_n_epochs = every_n_epochs
        self.batch_size = batch_size
        self.num_images = num_images
        self.save_batches = save_batches
        self.save_dir = Path(save_dir) if save_dir else None
        self.prefix = prefix
        self.seed = seed
        self._epoch_start: float | None = None

    # ---- which images ---------------------------------------------------------------------------
    def _due(self, trainer: Trainer) -> bool:
        return (
            not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def _batches(self) -> list[Batch]:
        kept = self.kept()
        if kept is None:
            return []
        x, y = kept
        return list(zip(x.split(self.batch_size), y.split(self.batch_size), strict=True))

    # ---- attacking --------------------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._due(trainer):
            return
        start = time.perf_counter()
        batches = self._batches()
        predictions = predict(pl_module, batches)
        metrics: dict[str, float] = {}
        shown: list[str] = []
        clean: AttackStats | None = None
        device = pl_module.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed + trainer.global_rank)
            for entry in self.entries:
                for eps in entry.epsilons:
                    stats = self._attack(trainer, pl_module, entry, eps, batches, predictions)
                    clean = clean or stats
                    key = f"{self.prefix}/{entry.name}/eps{format_eps(eps)}"
                    summary = stats.summary()
                    metrics.update({f"{key}/{name}": summary[name] for name in LOGGED})
                    shown.append(f"{entry.name}@{format_eps(eps)} {100 * stats.robust_acc:.1f}%")
        seconds = time.perf_counter() - start
        epoch = time.perf_counter() - (self._epoch_start or start)
        share = seconds / epoch if epoch > 0 else 1.0
        if clean is not None:
            metrics[f"{self.prefix}/clean_acc"] = clean.clean_acc
        metrics[f"{self.prefix}/seconds"] = seconds
        metrics[f"{self.prefix}/epoch_share"] = share
        # every rank holds the same reduced numbers; sync_dist only keeps Lightning from warning
        pl_module.log_dict(metrics, sync_dist=True)
        count = int(clean.count) if clean else 0
        log.info(
            f"adversarial eval, epoch {trainer.current_epoch}: {count} images, {seconds:.1f} s "
            f"({100 * share:.0f}% of the epoch): " + ", ".join(shown)
        )

    def _attack(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        entry: SuiteEntry,
        eps: float,
        batches: list[Batch],
        predictions: list[torch.Tensor],
    ) -> AttackStats:
        outcomes: list[AttackOutcome] = []
        keep_all = self.save_batches
        picture = self.num_images > 0 and eps == max(entry.epsilons) and trainer.is_global_zero

        def keep(outcome: AttackOutcome) -> None:
            if keep_all or (picture and not outcomes):
                outcomes.append(outcome)

        where = f"callbacks.adversarial_eval.suite.attacks.{entry.name}"
        local = run_attack(pl_module, entry.attack, eps, batches, where, keep, predictions)
        gathered = trainer.strategy.all_gather(local.to_tensor(pl_module.device))
        if picture and outcomes:
            self._log_grid(trainer, entry, eps, outcomes[0])
        if keep_all and outcomes:
            self._save(trainer, entry, eps, outcomes)
        return AttackStats.reduce(gathered)

    # ---- media ------------------------------------------------------------------------------------
    def _log_grid(
        self, trainer: Trainer, entry: SuiteEntry, eps: float, outcome: AttackOutcome
    ) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        images, captions = adversarial_strips(outcome, self.num_images)
        captions = [f"{entry.name}@{format_eps(eps)}: {c}" for c in captions]
        for logger in loggers:
            logger.log_image(
                f"{self.prefix}/{entry.name}", images, step=trainer.global_step, caption=captions
            )

    def _save(
        self, trainer: Trainer, entry: SuiteEntry, eps: float, outcomes: list[AttackOutcome]
    ) -> None:
        assert self.save_dir is not None
        folder = self.save_dir / f"epoch_{trainer.current_epoch:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        batch = {
            name: torch.cat([getattr(o, name).detach().cpu() for o in outcomes])
            for name in ("x", "x_adv", "y", "pred_clean", "pred_adv")
        }
        batch.update(attack=entry.attack, eps=eps, rank=trainer.global_rank)
        path = folder / f"{entry.name}_eps{format_eps(eps)}_rank{trainer.global_rank}.pt"
        torch.save(batch, path)
