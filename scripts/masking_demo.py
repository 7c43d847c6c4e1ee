"""Gradient masking, caught: an undefended classifier behind four tricks, evaluated by
`advlab.evaluate`, next to its true robust accuracy from an attack adapted to each trick.

    python scripts/masking_demo.py --classifier <mnist_clean last.ckpt> \
        --honest <mnist_pgd_at last.ckpt> --data-dir ../shared/datasets --n 500

Tricks: 4-level input quantization (adapted attack: BPDA, PGD through a straight-through
estimator), logits x 1e4 (APGD-CE on the unscaled logits: same predictions), Gaussian input
noise at test time (EOT-PGD over 20 draws; accuracy averaged over 10 draws), softmax
probabilities (APGD-CE on their log). Prints one row per model: verdict, headline, true robust
accuracy. `--json` also writes every number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torchattacks
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import advlab  # noqa: E402
from advlab.checkpoints import load_classifier_net  # noqa: E402
from advlab.data import MNISTDataModule  # noqa: E402
from advlab.evaluation.masked_models import (  # noqa: E402
    LogOf,
    NoisyInput,
    Probabilities,
    Quantized,
    ScaledLogits,
)

EPS = 0.3


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int = 1) -> float:
    with torch.no_grad():
        return sum((model(x).argmax(1) == y).float().mean().item() for _ in range(draws)) / draws


def attacked(attack, x: torch.Tensor, y: torch.Tensor, batch: int = 250) -> torch.Tensor:
    return torch.cat(
        [attack(xb, yb) for xb, yb in zip(x.split(batch), y.split(batch), strict=True)]
    )


def true_robust_accuracy(name: str, net: nn.Module, model: nn.Module, x, y) -> tuple[float, str]:
    """The attack built for each trick, scored on the model as deployed."""
    torch.manual_seed(0)
    if name == "quantized":
        bpda = torchattacks.PGD(Quantized(net, straight_through=True), EPS, 0.01, 100, True)
        return accuracy(model, attacked(bpda, x, y), y), "BPDA-PGD-100"
    if name == "scaled_logits":
        apgd = torchattacks.APGD(net, eps=EPS, steps=100, loss="ce", seed=0)
        return accuracy(model, attacked(apgd, x, y), y), "APGD-CE on unscaled logits"
    if name == "noisy_input":
        eot = torchattacks.EOTPGD(model, eps=EPS, alpha=0.01, steps=40, eot_iter=20)
        return accuracy(model, attacked(eot, x, y), y, draws=10), "EOT-PGD-40 (20 draws)"
    if name == "probabilities":
        apgd = torchattacks.APGD(LogOf(model), eps=EPS, steps=100, loss="ce", seed=0)
        return accuracy(model, attacked(apgd, x, y), y), "APGD-CE on log-probabilities"
    square = torchattacks.Square(model, eps=EPS, n_queries=1000, seed=0)
    apgd = torchattacks.APGD(model, eps=EPS, steps=100, loss="ce", seed=0)
    x_square, x_apgd = attacked(square, x, y), attacked(apgd, x, y)
    with torch.no_grad():
        robust = (model(x_square).argmax(1) == y) & (model(x_apgd).argmax(1) == y)
    return robust.float().mean().item(), "min(APGD-CE-100, Square-1000) per image"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", required=True, help="an undefended model=robust .ckpt")
    parser.add_argument("--honest", help="an adversarially trained model=robust .ckpt")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--n", type=int, default=500, help="test digits")
    parser.add_argument("--attack", default="autoattack_fast", help="eval.py's headline attack")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    data = MNISTDataModule(args.data_dir, val_size=0, download=False, eval_batch_size=args.n)
    data.setup("test")
    x, y = data.on_after_batch_transfer(next(iter(data.test_dataloader())), 0)
    x, y = x[: args.n], y[: args.n]
    _, net = load_classifier_net(args.classifier, "--classifier")
    net.eval()
    models = {
        "undefended": net,
        "quantized": Quantized(net),
        "scaled_logits": ScaledLogits(net),
        "noisy_input": NoisyInput(net),
        "probabilities": Probabilities(net),
    }
    if args.honest:
        models["honest_advlab"] = load_classifier_net(args.honest, "--honest")[1].eval()
    rows = []
    for name, model in models.items():
        report = advlab.evaluate(model, (x, y), eps=EPS, attack=args.attack)
        base = net if name != "honest_advlab" else model
        true_acc, how = true_robust_accuracy(name, base, model, x, y)
        rows.append({"model": name, "verdict": report.verdict, "clean": report.clean_acc,
                     "headline": report.headline.robust_acc, "headline_attack":
                     report.headline.label, "true_robust_acc": true_acc, "true_attack": how})  # fmt: skip
        print(
            f"{name:>15} | {report.verdict[:60]:<60} | clean {100 * report.clean_acc:5.1f}% | "
            f"headline {100 * report.headline.robust_acc:5.1f}% | true {100 * true_acc:5.1f}% "
            f"({how})",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
