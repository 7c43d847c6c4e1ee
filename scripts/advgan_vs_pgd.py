"""A trained AdvGAN against PGD-40 on the same classifiers and test images: success and speed.

    python scripts/advgan_vs_pgd.py --advgan logs/train/runs/<advgan run>/checkpoints/epoch_009.ckpt \
        --classifier target=<its target .ckpt> --classifier seed7=<another classifier .ckpt> \
        --data-dir ../shared/datasets

For every classifier, in this process and back to back on the same device: AdvGAN's perturbations
(`AdvGANAttack`, one generator pass per batch, never looking at the classifier) and PGD-40
(`configs/attack/pgd40.yaml`: step 0.01, random start), each timed around the attack call only,
after one warm-up batch each. Both are scored by `advlab.evaluation.attack_batch` (budget check,
success rate = share of the correctly classified images the attack makes wrong). Against a
classifier other than the AdvGAN's target the AdvGAN numbers are a transfer (black-box) attack;
PGD-40 is always white-box. Prints a table; `--json` also writes every number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from advlab.attacks import build_attack  # noqa: E402
from advlab.attacks.advgan import AdvGANAttack  # noqa: E402
from advlab.checkpoints import load_classifier_net  # noqa: E402
from advlab.data import CIFAR10DataModule, MNISTDataModule  # noqa: E402
from advlab.errors import AdvlabError  # noqa: E402
from advlab.eval import test_batches  # noqa: E402
from advlab.evaluation.measure import AttackStats, attack_batch  # noqa: E402
from advlab.models.frozen_classifier import FrozenClassifier  # noqa: E402

DATA = {"mnist": MNISTDataModule, "cifar10": CIFAR10DataModule}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--advgan", required=True, help="checkpoint of a model=advgan run")
    parser.add_argument(
        "--classifier", action="append", required=True, metavar="NAME=PATH",
        help="a model=robust checkpoint to attack (repeat for several)",
    )  # fmt: skip
    parser.add_argument("--data", choices=sorted(DATA), default="mnist")
    parser.add_argument("--data-dir", default="data/", help="folder holding MNIST/ or cifar-10-*")
    parser.add_argument("--n", type=int, default=1000, help="first N test images (default 1000)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--pgd", default=str(REPO / "configs" / "attack" / "pgd40.yaml"),
                        help="attack config of the reference attack (default PGD-40)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1, help="timed repeats of both attacks")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:1 ...")
    parser.add_argument("--seed", type=int, default=0, help="seed of PGD's random starts")
    parser.add_argument("--json", help="also write the numbers to this file")
    return parser.parse_args(argv)


def named_paths(values: list[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"advgan_vs_pgd.py: error: --classifier {value!r} is not NAME=PATH")
        pairs[name] = path
    return pairs


def run(attack: Any, model: torch.nn.Module, batches, eps: float, where: str) -> AttackStats:
    total = AttackStats()
    for x, y in batches:
        total = total.add(attack_batch(model, attack, x, y, eps, "Linf", where=where).stats)
    return total


def attack_config(path: str, data: str) -> dict[str, Any]:
    """The attack config at `path`, its `${data.threat_model.eps}` read from configs/data/."""
    threat_model = OmegaConf.load(REPO / "configs" / "data" / f"{data}.yaml").threat_model
    root = OmegaConf.create(
        {"data": {"threat_model": threat_model}, "attack": OmegaConf.load(path)}
    )
    return OmegaConf.to_container(root.attack, resolve=True)


def compare(args: argparse.Namespace) -> dict[str, Any]:
    classifiers = named_paths(args.classifier)
    device = torch.device(args.device)
    datamodule = DATA[args.data](data_dir=args.data_dir, download=False, val_size=0)
    batches = test_batches(datamodule, args.n, args.batch_size, device)
    pgd_cfg = attack_config(args.pgd, args.data)
    results: dict[str, Any] = {}
    for name, path in classifiers.items():
        _, net = load_classifier_net(path, where=f"--classifier {name}")
        model = FrozenClassifier(net).to(device)
        advgan = AdvGANAttack(model, ckpt_path=args.advgan, eps=pgd_cfg["eps"])
        pgd = build_attack(pgd_cfg, model, where="--pgd")
        warm_x, warm_y = batches[0][0][:8], batches[0][1][:8]
        advgan(warm_x, warm_y), pgd(warm_x, warm_y)
        rounds = []
        for _ in range(args.rounds):
            torch.manual_seed(args.seed)
            gan_stats = run(advgan, model, batches, pgd_cfg["eps"], "AdvGAN")
            pgd_stats = run(pgd, model, batches, pgd_cfg["eps"], "PGD")
            rounds.append((gan_stats, pgd_stats))
        gan_stats, pgd_stats = rounds[-1]
        ratios = [p.seconds / g.seconds for g, p in rounds]
        results[name] = {
            "checkpoint": path,
            "clean_acc": gan_stats.clean_acc,
            "advgan": gan_stats.summary(),
            "pgd": pgd_stats.summary(),
            "speedup_per_round": ratios,
            "speedup": statistics.median(ratios),
        }
    return results


def print_table(results: dict[str, Any], args: argparse.Namespace) -> None:
    n = int(next(iter(results.values()))["advgan"]["count"])
    print(f"{n} test images, Linf, AdvGAN {args.advgan} vs {Path(args.pgd).stem}, {args.device}")
    print("| classifier | clean acc | AdvGAN success | AdvGAN s | PGD success | PGD s | speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        g, p = r["advgan"], r["pgd"]
        print(f"| {name} | {100 * r['clean_acc']:.1f}% | {100 * g['success_rate']:.1f}% | "
              f"{g['seconds']:.3f} | {100 * p['success_rate']:.1f}% | {p['seconds']:.2f} | "
              f"{r['speedup']:.0f}x |")  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    try:
        results = compare(args)
    except AdvlabError as err:
        raise SystemExit(f"advgan_vs_pgd.py: error: {err}") from None
    print_table(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
