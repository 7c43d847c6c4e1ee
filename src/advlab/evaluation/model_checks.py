"""Probes of the model itself, run before and after the attacks: the ways a model can hide its
gradients that no attack result shows by itself (Athalye et al. 2018; AutoAttack's own flags).

Each probe returns a `CheckResult`: randomness at test time, probabilities instead of logits,
zero or vanishing input gradients, and a model whose mode or buffers change while attacked.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from advlab.evaluation.sanity import FAIL, PASS, CheckResult

Batch = tuple[torch.Tensor, torch.Tensor]
#: an input gradient below this (largest pixel) is "zero" for an attack in float32
VANISHING = 1e-12


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def deterministic(model: nn.Module, x: torch.Tensor, draws: int = 5) -> CheckResult:
    """The same input must give the same logits: a randomized model needs attacks that average
    over its randomness (EOT), or its robustness is overstated."""
    name = "the model is deterministic (no test-time randomness)"
    with torch.no_grad():
        outputs = [model(x) for _ in range(draws)]
    spread = max(float((o - outputs[0]).abs().max()) for o in outputs[1:])
    scale = float(outputs[0].abs().max()) or 1.0
    numbers = {"max_logit_difference": spread, "draws": draws}
    if spread > 1e-5 * scale:
        return CheckResult(
            name, FAIL, f"{draws} passes of the same images differ by up to {spread:.3g} in the "
            f"logits: a randomized model; deterministic attacks overstate its robustness",
            numbers,
        )  # fmt: skip
    return CheckResult(name, PASS, f"{draws} passes of the same images agree", numbers)


def returns_logits(model: nn.Module, x: torch.Tensor) -> CheckResult:
    """Probabilities saturate: cross-entropy on softmax(softmax) has almost no gradient."""
    name = "the model returns logits, not probabilities"
    with torch.no_grad():
        out = model(x)
    row_sums = out.sum(dim=1)
    probabilities = bool((out >= -1e-6).all() and (row_sums - 1).abs().max() < 1e-4)
    numbers = {"min": float(out.min()), "max": float(out.max()),
               "max_row_sum_error": float((row_sums - 1).abs().max())}  # fmt: skip
    if probabilities:
        return CheckResult(
            name, FAIL, "every output row is non-negative and sums to 1: the model returns "
            "probabilities; gradient attacks on them are unreliable (return logits or log-probs)",
            numbers,
        )  # fmt: skip
    return CheckResult(name, PASS, f"outputs in [{out.min():.3g}, {out.max():.3g}]", numbers)


def input_gradients(
    model: nn.Module, batches: Sequence[Batch], max_share: float = 0.01
) -> CheckResult:
    """Cross-entropy's input gradient must not vanish: quantization, saturated softmax and other
    non-differentiable steps leave gradient attacks nothing to follow."""
    name = "input gradients do not vanish"
    zero = total = 0
    for x, y in batches:
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(x), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(x)
        zero += int((grad.flatten(1).abs().amax(dim=1) < VANISHING).sum())
        total += len(y)
    share = zero / max(total, 1)
    numbers = {"zero_gradient_images": zero, "images": total, "max_share": max_share}
    shown = f"{zero} of {total} images ({_pct(share)}) have a zero input gradient"
    if share > max_share:
        return CheckResult(
            name, FAIL, f"{shown}: gradient attacks cannot move them (a non-differentiable or "
            f"saturated model); only gradient-free or adapted attacks (BPDA) measure it",
            numbers,
        )  # fmt: skip
    return CheckResult(name, PASS, shown, numbers)


def state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Buffers (BatchNorm statistics and the like), to compare after the attacks."""
    return {name: buffer.detach().clone() for name, buffer in model.named_buffers()}


def unchanged_by_attacks(
    model: nn.Module, before: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> CheckResult:
    """Attacks run the model in eval mode: a model that switches itself to training mode, or
    updates its buffers, is a moving target whose numbers no attack can trust."""
    name = "attacking the model changes neither its mode nor its buffers"
    model.eval()
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        torch.autograd.grad(loss, x, allow_unused=True)
    training = sorted(n or type(model).__name__ for n, m in model.named_modules() if m.training)
    after = dict(model.named_buffers())
    changed = sorted(
        n for n, b in before.items() if n not in after or not torch.equal(b, after[n].detach())
    )
    numbers = {"training_modules": training[:10], "changed_buffers": changed[:10]}
    if training or changed:
        parts = []
        if training:
            parts.append(f"modules back in training mode after a forward pass: {training[:3]}")
        if changed:
            parts.append(f"buffers changed while attacked: {changed[:3]}")
        return CheckResult(name, FAIL, "; ".join(parts), numbers)
    return CheckResult(name, PASS, f"{len(before)} buffers unchanged, eval mode kept", numbers)
