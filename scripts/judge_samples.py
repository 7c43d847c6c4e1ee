"""Judge generated MNIST digits with an independent classifier: class coverage, confidence, FID.

    python scripts/sample.py --ckpt <gan run>/checkpoints/last.ckpt --n 5000 --out gan
    python scripts/judge_samples.py --judge <other mnist_clean run>/checkpoints/last.ckpt \
        --samples gan.pt [more.pt ...] --data-dir ../shared/datasets

For each .pt of images in [0, 1]: the share of samples the judge assigns to each digit, the mean
top-class confidence, and FID/KID in the judge's penultimate-layer feature space against the
training and the test digits. When <name>.labels.pt sits beside <name>.pt (a conditional GAN's
requested classes, from sample.py), also the share the judge assigns to the requested class,
overall and per class. Use a judge trained independently of the GAN's FID extractor (another
seed and split) so that the GAN was not selected for it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.datasets import MNIST

from advlab.models import RobustClassifier
from advlab.quality import ClassifierFeatures, QualityMetrics

CHUNK = 1000


def judge(
    samples: torch.Tensor,
    classifier: RobustClassifier,
    references: dict[str, torch.Tensor],
    requested: torch.Tensor | None = None,
) -> dict[str, float | list[float]]:
    """Class shares, mean top-class confidence, FID/KID against each reference set, and with
    `requested` labels the share of samples assigned to their requested class (per class too)."""
    with torch.no_grad():
        probs = torch.cat([classifier(chunk).softmax(1) for chunk in samples.split(CHUNK)])
    top, labels = probs.max(1)
    shares = torch.bincount(labels, minlength=probs.shape[1]).float() / len(samples)
    result: dict[str, float | list[float]] = {
        "class_shares": shares.tolist(),
        "min_class_share": shares.min().item(),
        "mean_confidence": top.mean().item(),
    }
    if requested is not None:
        hits = labels == requested
        result["requested_share"] = hits.float().mean().item()
        result["requested_share_per_class"] = [
            hits[requested == k].float().mean().item() for k in range(probs.shape[1])
        ]
    features = ClassifierFeatures(classifier.net, tuple(samples.shape[1:]))
    for name, real in references.items():
        metrics = QualityMetrics(features, kid_subsets=20, kid_subset_size=1000)
        for chunk in real.split(CHUNK):
            metrics.update(chunk, real=True)
        for chunk in samples.split(CHUNK):
            metrics.update(chunk, real=False)
        values = metrics.compute()
        result[f"fid_{name}"] = values["fid"].item()
        result[f"kid_{name}"] = values["kid"].item()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", required=True, help="model=robust MNIST checkpoint")
    parser.add_argument("--samples", nargs="+", required=True, help=".pt files of images")
    parser.add_argument("--data-dir", default="data", help="folder holding MNIST/raw")
    args = parser.parse_args(argv)

    classifier = RobustClassifier.load_from_checkpoint(args.judge, map_location="cpu").eval()
    references, test_labels = {}, None
    for split in ("train", "test"):
        digits = MNIST(args.data_dir, train=split == "train")
        references[split] = digits.data.unsqueeze(1).float() / 255
        test_labels = digits.targets
    with torch.no_grad():
        predictions = torch.cat([classifier(c).argmax(1) for c in references["test"].split(CHUNK)])
    print(f"judge accuracy on the test digits: {(predictions == test_labels).float().mean():.4f}")
    for path in args.samples:
        samples = torch.load(path, weights_only=True).float()
        if samples.min() < 0 or samples.max() > 1:
            raise SystemExit(f"judge_samples.py: error: {path} has values outside [0, 1]")
        labels_file = Path(path).with_suffix(".labels.pt")
        requested = torch.load(labels_file, weights_only=True) if labels_file.is_file() else None
        r = judge(samples, classifier, references, requested)
        shares = " ".join(f"{100 * s:.1f}" for s in r["class_shares"])
        print(
            f"{path}: n={len(samples)} | mean confidence {r['mean_confidence']:.3f} | "
            f"min class {100 * r['min_class_share']:.1f}% | classes 0-9 (%) {shares} | "
            f"FID train {r['fid_train']:.1f} test {r['fid_test']:.1f} | "
            f"KID train {r['kid_train']:.2f} test {r['kid_test']:.2f}"
        )
        if requested is not None:
            per_class = " ".join(f"{100 * s:.1f}" for s in r["requested_share_per_class"])
            print(
                f"{path}: assigned to the requested class {100 * r['requested_share']:.2f}% | "
                f"per requested class 0-9 (%) {per_class}"
            )


if __name__ == "__main__":
    main()
