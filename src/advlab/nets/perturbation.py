"""The AdvGAN generator (an image-to-image network that proposes a perturbation for each image)
and the one formula that turns its output into adversarial images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from advlab.nets.dcgan import check_image_shape


def perturb_images(generator: nn.Module, x: torch.Tensor, eps: float) -> torch.Tensor:
    """x + eps * tanh(G(2x - 1)), clipped to [0, 1]: images x in [0, 1] -> adversarial images.

    Within eps of x in Linf and a valid image by construction, whatever `generator` outputs.
    The one place this formula lives: the AdvGAN LightningModule trains through it and
    `advlab.attacks.advgan.AdvGANAttack` attacks with it, so both give the same images.
    The bound is applied in float32: under bf16 autocast, eps * tanh(.) rounds 0.3 up to 0.3008.
    """
    return (x + eps * torch.tanh(generator(x * 2 - 1).float())).clamp(0, 1)


def _conv_block(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.InstanceNorm2d(channels, affine=True), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    """x + conv-norm-ReLU-conv-norm(x), at constant width and resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_block(nn.Conv2d(channels, channels, 3, padding=1, bias=False), channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PerturbationGenerator(nn.Module):
    """Images (N, C, H, W) in [-1, 1] -> an unbounded perturbation pattern of the same shape.

    The generator of AdvGAN (Xiao et al. 2018), shaped like their image-to-image network: two
    stride-2 convolutions down to H/4 x W/4, residual blocks there, two transposed convolutions
    back up. The caller bounds the output (AdvGAN: eps * tanh(output), a Linf bound), so the
    bound holds whatever network is configured.
    InstanceNorm rather than BatchNorm: each image's perturbation depends on that image only, the
    network behaves the same in train and eval mode, and nothing needs syncing across processes.

    Args:
        image_shape: (channels, height, width) of the images; H and W must be multiples of 4.
        width: channels at full resolution (2x at H/2, 4x at H/4).
        res_blocks: residual blocks at H/4 x W/4.
    """

    def __init__(
        self, image_shape: Sequence[int] = (1, 28, 28), width: int = 16, res_blocks: int = 4
    ) -> None:
        super().__init__()
        channels, height, width_px = check_image_shape(image_shape)
        self.image_shape = (channels, height, width_px)
        w1, w2, w4 = width, 2 * width, 4 * width
        self.down = nn.Sequential(
            *_conv_block(nn.Conv2d(channels, w1, 3, padding=1, bias=False), w1),
            *_conv_block(nn.Conv2d(w1, w2, 4, stride=2, padding=1, bias=False), w2),
            *_conv_block(nn.Conv2d(w2, w4, 4, stride=2, padding=1, bias=False), w4),
        )
        self.middle = nn.Sequential(*(ResidualBlock(w4) for _ in range(res_blocks)))
        self.up = nn.Sequential(
            *_conv_block(nn.ConvTranspose2d(w4, w2, 4, stride=2, padding=1, bias=False), w2),
            *_conv_block(nn.ConvTranspose2d(w2, w1, 4, stride=2, padding=1, bias=False), w1),
            nn.Conv2d(w1, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.middle(self.down(x)))
