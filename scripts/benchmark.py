"""Training throughput of advlab's Trainer loop against a plain PyTorch loop doing the same math.

For each training method (clean, fgsm_rs, pgd = PGD-10, trades, mart) and dataset shape (MNIST, CIFAR-10), both
loops train the same network (built from the same Hydra config) with the same torchattacks
attack, optimizer and batch size, in this process, interleaved round by round, each timed after
its own warm-up batches. The plain loop reads images the way people usually write it: a
torchvision dataset with a per-item `ToTensor` transform (and CIFAR's RandomCrop/Flip) in a
shuffling DataLoader. Reported: images/s of both (medians over rounds), their ratio (the median
of the per-round ratios, each round's pair timed back to back), the cost of a PGD-10 step
relative to a clean step, and the per-epoch adversarial-evaluation callback's share of an epoch.

    python scripts/benchmark.py --data-dir ../shared/datasets          # CPU, real MNIST digits
    python scripts/benchmark.py --device cuda --precision bf16-mixed --channels-last on --compile
    python scripts/benchmark.py --datasets cifar10 --recipes pgd --device cuda   # GPU, CIFAR-10

Without real files for a dataset (CIFAR-10 here), random images are written in the real file
format to a temp dir, and the table says so: throughput does not depend on pixel values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch import Callback, Trainer
from omegaconf import open_dict
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from advlab.methods import build_method  # noqa: E402
from advlab.utils import instantiate  # noqa: E402

RECIPES = ("clean", "fgsm_rs", "pgd", "trades", "mart")  # configs/method/ options
DATASETS = {"mnist": ("mnist", "small_cnn"), "cifar10": ("cifar10", "preact_resnet18")}


class ThroughputTimer(Callback):
    """Images/s of the training batches after `warmup` batches (steady state only)."""

    def __init__(self, warmup: int, batch_size: int) -> None:
        self.warmup, self.batch_size = warmup, batch_size
        self.start: float | None = None
        self.images_per_s = 0.0

    def on_train_batch_start(self, trainer: Trainer, *_: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_idx == self.warmup:
            _sync(trainer.strategy.root_device)
            self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, *_: Any) -> None:
        _sync(trainer.strategy.root_device)
        timed = trainer.fit_loop.epoch_loop.batch_progress.current.completed - self.warmup
        self.images_per_s = timed * self.batch_size / (time.perf_counter() - self.start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compose_config(dataset: str, recipe: str, args: argparse.Namespace, data_dir: str):
    data, net = DATASETS[dataset]
    overrides = [
        f"data={data}", f"model/net={net}", f"method={recipe}", f"data.data_dir={data_dir}",
        f"data.batch_size={args.batch_size}", "data.download=false", "logger=none",
        f"data.val_size={args.val_size}",
        f"model.compile={str(args.compile).lower()}",
    ]  # fmt: skip
    if args.channels_last != "default":
        overrides.append(f"model.channels_last={args.channels_last == 'on'}")
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides)


def advlab_images_per_s(cfg, args: argparse.Namespace) -> float:
    """advlab's own loop: DataModule + RobustClassifier + Lightning Trainer, as train.py builds."""
    timer = ThroughputTimer(args.warmup, args.batch_size)
    trainer = Trainer(
        accelerator=args.device, devices=1, precision=args.precision, max_epochs=1,
        limit_train_batches=args.warmup + args.batches, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        inference_mode=False, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(instantiate(cfg.model), datamodule=instantiate(cfg.data))
    return timer.images_per_s


def plain_dataset(dataset: str, data_dir: str):
    """What a hand-written script uses: torchvision's dataset with per-item PIL transforms."""
    if dataset == "mnist":
        return datasets.MNIST(data_dir, train=True, transform=transforms.ToTensor())
    augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    return datasets.CIFAR10(
        data_dir, train=True, transform=transforms.Compose([*augment, transforms.ToTensor()])
    )


def plain_images_per_s(cfg, dataset: str, data_dir: str, args: argparse.Namespace) -> float:
    """The same math in a plain PyTorch loop: same net config, attack config, optimizer."""
    device = torch.device(args.device if args.device != "gpu" else "cuda")
    net = instantiate(cfg.model.net).to(device)
    channels_last = args.channels_last == "on"  # "default": NCHW, as a plain loop is written
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if args.compile:
        net.compile()
    optimizer = instantiate(cfg.model.optimizer)(params=net.parameters())
    method = build_method(cfg.model.method)
    attack = method.attack(net)
    loader = DataLoader(plain_dataset(dataset, data_dir), batch_size=args.batch_size, shuffle=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in args.precision)
    net.train()
    start = None
    for index, (x, y) in enumerate(loader):
        if index == args.warmup:
            _sync(device)
            start = time.perf_counter()
        if index == args.warmup + args.batches:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            loss, _ = method.loss(net, attack, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return args.batches * args.batch_size / (time.perf_counter() - start)


def adversarial_eval_share(data_dir: str, args: argparse.Namespace) -> dict[str, float]:
    """Seconds of the default per-epoch adversarial evaluation vs. an mnist_pgd_at epoch."""
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["experiment=mnist_pgd_at", f"data.data_dir={data_dir}", "logger=none"],
        )
    callback_cfg = cfg.callbacks.adversarial_eval
    with open_dict(callback_cfg):
        callback_cfg.save_dir = tempfile.mkdtemp(prefix="advlab-bench-adv-")
    callbacks = [instantiate(callback_cfg)]
    timer = ThroughputTimer(args.warmup, cfg.data.batch_size)
    trainer = Trainer(
        accelerator=args.device, devices=1, max_epochs=1, limit_train_batches=args.warmup + 10,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, inference_mode=False, num_sanity_val_steps=0,
        callbacks=[timer, *callbacks],
    )  # fmt: skip
    datamodule = instantiate(cfg.data)
    trainer.fit(instantiate(cfg.model), datamodule=datamodule)
    seconds = float(trainer.callback_metrics["adv/seconds"])
    epoch_s = len(datamodule.data_train) / timer.images_per_s
    return {"callback_s": seconds, "epoch_s": epoch_s, "share": seconds / (seconds + epoch_s)}


def synthetic_files(dataset: str, root: Path) -> str:
    """Random images in the real on-disk format (tests' writer), for shapes without real files."""
    from tests.datafiles import write_cifar10, write_mnist

    if dataset == "mnist":
        write_mnist(root, n_train=7000, n_test=1000)
    else:
        write_cifar10(root, per_batch=2000, n_test=1000)
        import torchvision.datasets.cifar as cifar  # random files cannot match the md5 sums

        cifar.check_integrity = lambda path, md5=None: Path(path).is_file()
    return str(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--data-dir", default="data", help="folder with MNIST/ and/or CIFAR files")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--val-size", type=int, default=500, help="held out of training files")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--precision", default="32-true", help="32-true | bf16-mixed")
    parser.add_argument(
        "--channels-last", choices=["default", "on", "off"], default="default",
        help="default: advlab as configured (model.channels_last, on), the plain loop NCHW as "
        "people write it; on/off: both loops",
    )  # fmt: skip
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--skip-callback", action="store_true", help="skip the callback share")
    parser.add_argument("--out", default="benchmark.json")
    args = parser.parse_args()
    torch.set_float32_matmul_precision("high")

    results: list[dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="advlab-bench-"))
    for dataset in args.datasets:
        data_dir, synthetic = args.data_dir, False
        probe = instantiate(compose_config(dataset, "clean", args, data_dir).data)
        if probe.missing_files():
            data_dir, synthetic = synthetic_files(dataset, scratch / dataset), True
        for recipe in args.recipes:
            cfg = compose_config(dataset, recipe, args, data_dir)
            plain, ours = [], []
            for round_index in range(args.rounds):  # interleaved; order alternates per round
                order = ("plain", "advlab") if round_index % 2 == 0 else ("advlab", "plain")
                for loop in order:
                    torch.manual_seed(round_index)
                    if loop == "plain":
                        plain.append(plain_images_per_s(cfg, dataset, data_dir, args))
                    else:
                        ours.append(advlab_images_per_s(cfg, args))
            row = {
                "dataset": dataset + (" (random pixels, real format)" if synthetic else ""),
                "recipe": recipe,
                "plain_img_s": statistics.median(plain),
                "advlab_img_s": statistics.median(ours),
                "plain_rounds": plain,
                "advlab_rounds": ours,
            }
            # each round's pair ran back to back, so its ratio cancels slow drifts of the machine
            row["round_ratios"] = [a / p for a, p in zip(ours, plain, strict=True)]
            row["ratio"] = statistics.median(row["round_ratios"])
            results.append(row)
            print(
                f"{row['dataset']:>40} {recipe:>8}: advlab {row['advlab_img_s']:8.1f} img/s, "
                f"plain {row['plain_img_s']:8.1f} img/s, ratio {row['ratio']:.2f} "
                f"(rounds {min(row['round_ratios']):.2f}-{max(row['round_ratios']):.2f})",
                flush=True,
            )

    summary: dict[str, Any] = {"rows": results, "settings": vars(args)}
    for dataset in args.datasets:
        rows = {r["recipe"]: r for r in results if r["dataset"].startswith(dataset)}
        if "clean" in rows and "pgd" in rows:
            cost = rows["clean"]["advlab_img_s"] / rows["pgd"]["advlab_img_s"]
            summary[f"{dataset}_pgd10_step_cost_vs_clean"] = cost
            print(f"{dataset}: one PGD-10 training step costs {cost:.1f}x a clean step")
    if not args.skip_callback and "mnist" in args.datasets:
        mnist_dir = args.data_dir
        probe = instantiate(compose_config("mnist", "clean", args, mnist_dir).data)
        if probe.missing_files():
            mnist_dir = str(scratch / "mnist")
        share = adversarial_eval_share(mnist_dir, args)
        summary["adversarial_eval_callback"] = share
        print(
            f"adversarial_eval callback: {share['callback_s']:.1f} s per epoch = "
            f"{100 * share['share']:.1f}% of an mnist_pgd_at epoch ({share['epoch_s']:.1f} s)"
        )
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
