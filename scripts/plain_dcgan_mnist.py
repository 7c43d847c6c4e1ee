"""Reference point for `experiment=mnist_dcgan`: a plain hand-written PyTorch DCGAN on MNIST.

The pytorch/examples DCGAN recipe sized for 28x28 (BatchNorm in G and D, BCE, Adam 2e-4 with
beta1 0.5, batch 64), no advlab and no Lightning, trained for a budget of CPU time (one thread,
so a busy machine does not shorten it), then 5000 samples are saved as the DCGAN example draws
them (generator in train mode):

    python scripts/plain_dcgan_mnist.py --cpu-minutes 7.3 --data-dir ../shared/datasets \
        --out plain          # plain.pt (5000 images in [0, 1]) and plain.png (10x10 grid)

Judge the samples with scripts/judge_samples.py, next to the GAN's own.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torchvision.datasets import MNIST
from torchvision.utils import save_image

NZ, NGF, NDF, BATCH = 100, 64, 64, 64


def networks() -> tuple[nn.Module, nn.Module]:
    generator = nn.Sequential(
        nn.ConvTranspose2d(NZ, NGF * 4, 7, 1, 0, bias=False), nn.BatchNorm2d(NGF * 4), nn.ReLU(True),
        nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF * 2), nn.ReLU(True),
        nn.ConvTranspose2d(NGF * 2, 1, 4, 2, 1, bias=False), nn.Tanh(),
    )  # fmt: skip
    discriminator = nn.Sequential(
        nn.Conv2d(1, NDF, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
        nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 2), nn.LeakyReLU(0.2, True),
        nn.Conv2d(NDF * 2, 1, 7, 1, 0, bias=False), nn.Sigmoid(),
    )  # fmt: skip
    for module in [*generator.modules(), *discriminator.modules()]:
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)
    return generator, discriminator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-minutes", type=float, default=10.0, help="training CPU budget")
    parser.add_argument("--data-dir", default="data", help="folder holding MNIST/raw")
    parser.add_argument("--out", default="plain_dcgan", help="output path without suffix")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)

    generator, discriminator = networks()
    digits = MNIST(args.data_dir, train=True).data.unsqueeze(1).float() / 127.5 - 1
    loader = torch.utils.data.DataLoader(digits, batch_size=BATCH, shuffle=True, drop_last=True)
    bce = nn.BCELoss()
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    start, cpu_start, steps, epochs = time.time(), time.process_time(), 0, 0
    budget = args.cpu_minutes * 60
    while time.process_time() - cpu_start < budget:
        for real in loader:
            n = len(real)
            discriminator.zero_grad()
            fake = generator(torch.randn(n, NZ, 1, 1))
            loss_d = bce(discriminator(real).view(-1), torch.ones(n)) + bce(
                discriminator(fake.detach()).view(-1), torch.zeros(n)
            )
            loss_d.backward()
            opt_d.step()
            generator.zero_grad()
            loss_g = bce(discriminator(fake).view(-1), torch.ones(n))
            loss_g.backward()
            opt_g.step()
            steps += 1
            if time.process_time() - cpu_start > budget:
                break
        epochs += 1
        print(f"epoch {epochs} step {steps} loss_d {loss_d.item():.3f} loss_g {loss_g.item():.3f}")

    with torch.no_grad():
        torch.manual_seed(1)
        chunks = [generator(torch.randn(BATCH, NZ, 1, 1)) for _ in range(5000 // BATCH + 1)]
        images = ((torch.cat(chunks)[:5000] + 1) / 2).clamp(0, 1)
    torch.save(images, f"{args.out}.pt")
    save_image(images[:100], f"{args.out}.png", nrow=10)
    print(
        f"{steps} steps ({epochs} epochs) in {time.process_time() - cpu_start:.0f} s CPU, "
        f"{time.time() - start:.0f} s wall: {args.out}.pt, {args.out}.png"
    )


if __name__ == "__main__":
    main()
