"""Reference point for `experiment=mnist_fgsm_rs`: FGSM-RS on MNIST as a user writes it by hand.

The recipe's training math (the widened strided CNN of Wong et al., torchattacks FFGSM eps 0.3 /
step 0.3 from a random start, 2-epoch epsilon warm-up, Adam with a one-cycle LR peaking at
5e-3, batch 100, 6,500 training digits: the recipe also holds 500 out; with
`--linearity-weight 10 --linearity-fraction 0.5` the recipe's ELLE penalty too), in a plain
PyTorch loop: torchvision's per-item `ToTensor`, no Lightning, no validation, no logger, no
checkpoints, no translations or weight averaging. It ends like the recipe's test: clean and
PGD-40 (step 0.01, random start) accuracy on the 1,000 test digits. Time the whole process
next to the recipe's:

    /usr/bin/time -v python scripts/plain_fgsm_rs_mnist.py --data-dir ../shared/datasets \
        --linearity-weight 10 --linearity-fraction 0.5
    /usr/bin/time -v python train.py experiment=mnist_fgsm_rs data.data_dir=../shared/datasets
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchattacks
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from advlab.models.regularizers import local_linearity_error  # noqa: E402
from advlab.nets import StridedCNN  # noqa: E402

EPS, ALPHA, LR, BATCH, WARMUP_EPOCHS, VAL_SIZE = 0.3, 0.3, 5e-3, 100, 2, 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--data-dir", default="data", help="folder holding MNIST/raw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--linearity-weight", type=float, default=0.0,
        help="add the ELLE penalty as the recipe does (model.linearity_weight); 0 = off",
    )  # fmt: skip
    parser.add_argument(
        "--linearity-fraction", type=float, default=1.0,
        help="share of each batch the penalty is computed on (model.linearity_fraction)",
    )  # fmt: skip
    args = parser.parse_args()
    start = time.time()
    torch.manual_seed(args.seed)

    train = datasets.MNIST(args.data_dir, train=True, transform=transforms.ToTensor())
    train = Subset(train, range(VAL_SIZE, len(train)))  # the recipe holds 500 digits out too
    test = datasets.MNIST(args.data_dir, train=False, transform=transforms.ToTensor())
    loader = DataLoader(train, batch_size=BATCH, shuffle=True)
    net = StridedCNN(channels=(32, 64), hidden=200)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LR, total_steps=args.epochs * len(loader), pct_start=0.4,
        anneal_strategy="linear", three_phase=False,
    )  # fmt: skip
    attack = torchattacks.FFGSM(net, eps=EPS, alpha=ALPHA)
    for epoch in range(args.epochs):
        net.train()
        for index, (x, y) in enumerate(loader):
            ramp = min(1.0, (epoch + index / len(loader)) / WARMUP_EPOCHS)
            attack.eps, attack.alpha = EPS * ramp, ALPHA * ramp
            loss = F.cross_entropy(net(attack(x, y)), y)
            if args.linearity_weight > 0:
                lin_err = local_linearity_error(net, x, y, attack.eps, args.linearity_fraction)
                loss = loss + args.linearity_weight * lin_err
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        print(f"epoch {epoch}: loss {loss.item():.3f}, {time.time() - start:.0f} s", flush=True)

    net.eval()
    x, y = next(iter(DataLoader(test, batch_size=len(test))))
    with torch.no_grad():
        clean = (net(x).argmax(1) == y).float().mean().item()
    x_adv = torchattacks.PGD(net, eps=EPS, alpha=0.01, steps=40, random_start=True)(x, y)
    with torch.no_grad():
        robust = (net(x_adv).argmax(1) == y).float().mean().item()
    print(f"clean {clean:.4f}, PGD-40 {robust:.4f}, {time.time() - start:.0f} s wall")


if __name__ == "__main__":
    main()
