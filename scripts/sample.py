"""Draw samples from a trained GAN checkpoint: a PNG grid and a .pt tensor of the images.

    python scripts/sample.py --ckpt logs/train/runs/<run>/checkpoints/last.ckpt --n 1000 \
        --seed 0 --out samples/mnist

writes samples/mnist.png (a grid of the first --grid images) and samples/mnist.pt (float
images in [0, 1], shape (n, C, H, W)). The same --seed gives the same images. A conditional GAN
(model=cgan) draws every class in turn, or only --label, and also writes samples/mnist.labels.pt
(the requested classes, int64); its grid has one column per class.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from advlab.models import GAN


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint of a model=gan run")
    parser.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--out", default="samples", help="output path without suffix")
    parser.add_argument("--grid", type=int, default=100, help="images in the PNG grid")
    parser.add_argument("--label", type=int, default=None, help="conditional GAN: only this class")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:1 ...")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> tuple[Path, Path]:
    args = parse_args(argv)
    if args.n < 1:
        raise SystemExit("sample.py: error: --n must be >= 1")
    if not Path(args.ckpt).is_file():
        raise SystemExit(f"sample.py: error: no checkpoint at {args.ckpt}")
    model = GAN.load_from_checkpoint(args.ckpt, map_location=args.device).eval()
    if args.label is not None and not model.conditional:
        raise SystemExit("sample.py: error: --label needs a conditional GAN (model=cgan)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png, pt = out.with_suffix(".png"), out.with_suffix(".pt")
    columns = None
    if model.conditional:
        images, labels = model.sample(args.n, labels=args.label, seed=args.seed)
        torch.save(labels.cpu(), out.with_suffix(".labels.pt"))
        columns = model.hparams.num_classes if args.label is None else None
    else:
        images = model.sample(args.n, seed=args.seed)
    images = images.cpu()
    shown = images[: args.grid]
    columns = columns or max(1, int(len(shown) ** 0.5))
    save_image(make_grid(shown, nrow=columns, pad_value=1.0), png)
    torch.save(images, pt)
    print(f"{args.n} samples of shape {tuple(images.shape[1:])}: {png}, {pt}")
    return png, pt


if __name__ == "__main__":
    main()
