"""Pictures of adversarial examples: clean | adversarial | perturbation, with labels."""

from __future__ import annotations

import numpy as np
import torch

from advlab.evaluation.measure import AttackOutcome

SEPARATOR = 2  # white pixels between the three panels


def amplified_perturbation(delta: torch.Tensor) -> torch.Tensor:
    """Map each image's perturbation to [0, 1] around grey (0.5 = unchanged pixel).

    Scaled per image by its largest change, so a 0.01 change is as visible as a 0.3 one.
    """
    scale = delta.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return 0.5 + delta / (2 * scale)


def to_pixels(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) floats in [0, 1] -> uint8 (H, W) or (H, W, 3): what wandb.Image shows as is.

    wandb rescales float tensors only sometimes (not single-channel ones); bytes are unambiguous.
    """
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return pixels[..., 0] if pixels.shape[2] == 1 else pixels


def adversarial_strips(outcome: AttackOutcome, count: int) -> tuple[list[np.ndarray], list[str]]:
    """Up to `count` pictures (H, 3W + 2 gaps) as uint8 pixels, and one caption each."""
    x, x_adv = outcome.x[:count].detach().cpu(), outcome.x_adv[:count].detach().cpu()
    delta = amplified_perturbation(x_adv - x)
    gap = torch.ones(*x.shape[:3], SEPARATOR)
    strips = torch.cat([x, gap, x_adv, gap, delta], dim=3)
    captions = []
    for true, clean, adv in zip(
        outcome.y[:count].tolist(),
        outcome.pred_clean[:count].tolist(),
        outcome.pred_adv[:count].tolist(),
        strict=True,
    ):
        verdict = "fooled" if clean == true and adv != true else ""
        captions.append(f"true {true} | clean {clean} | adv {adv} {verdict}".strip())
    return [to_pixels(strip) for strip in strips], captions
