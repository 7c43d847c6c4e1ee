"""Reference point for `experiment=mnist_fast_at`: FGSM-RS on MNIST as a user writes it by hand.

Same math as the recipe (SmallCNN, torchattacks FFGSM eps 0.3 / step 0.225 from a random start,
2-epoch epsilon warm-up, Adam with a one-cycle LR peaking at 5e-3, batch 100, 6,500 training
digits: the recipe also holds 500 out), but a plain PyTorch loop: torchvision's per-item
`ToTensor`, no Lightning, no validation, no logger. It ends like the recipe's test: clean and
PGD-40 (step 0.01, random start) accuracy on the 1,000 test digits. Time the whole process
next to the recipe's:

    /usr/bin/time -v python scripts/plain_fgsm_rs_mnist.py --epochs 20 --data-dir ../shared/datasets
    /usr/bin/time -v python train.py experiment=mnist_fast_at data.data_dir=../shared/datasets
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

from advlab.nets import SmallCNN  # noqa: E402

EPS, ALPHA, LR, BATCH, WARMUP_EPOCHS, VAL_SIZE = 0.3, 0.225, 5e-3, 100, 2, 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--data-dir", default="data", help="folder holding MNIST/raw")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    torch.manual_seed(args.seed)

    train = datasets.MNIST(args.data_dir, train=True, transform=transforms.ToTensor())
    train = Subset(train, range(VAL_SIZE, len(train)))  # the recipe holds 500 digits out too
    test = datasets.MNIST(args.data_dir, train=False, transform=transforms.ToTensor())
    loader = DataLoader(train, batch_size=BATCH, shuffle=True)
    net = SmallCNN()
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
