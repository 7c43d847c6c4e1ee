"""Network knobs that recipes set from YAML."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.nets import SmallCNN, StridedCNN
from advlab.nets.small_cnn import ACTIVATIONS


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_small_cnn_uses_the_activation_it_is_given(name: str) -> None:
    net = SmallCNN(channels=(4, 8), hidden=16, activation=name)
    kinds = {type(m) for m in net.modules() if type(m) in ACTIVATIONS.values()}
    assert kinds == {ACTIVATIONS[name]}
    assert sum(isinstance(m, ACTIVATIONS[name]) for m in net.modules()) == 6  # 4 conv + 2 fc
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_relu_and_silu_networks_differ_only_in_activation() -> None:
    torch.manual_seed(0)
    relu = SmallCNN(channels=(4, 8), hidden=16)
    torch.manual_seed(0)
    silu = SmallCNN(channels=(4, 8), hidden=16, activation="silu")
    assert all(torch.equal(a, b) for a, b in zip(relu.parameters(), silu.parameters(), strict=True))
    x = torch.rand(2, 1, 28, 28)
    assert not torch.allclose(relu(x), silu(x))
    assert isinstance(relu.head[3], nn.ReLU) and isinstance(silu.head[3], nn.SiLU)


def test_unknown_activation_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"model.net.activation='tanh' is not one of \['gelu'"):
        SmallCNN(activation="tanh")


@pytest.mark.parametrize(("pooling", "kind"), [("max", nn.MaxPool2d), ("avg", nn.AvgPool2d)])
def test_small_cnn_pooling_knob(pooling: str, kind: type[nn.Module]) -> None:
    net = SmallCNN(channels=(4, 8), hidden=16, pooling=pooling)
    assert sum(isinstance(m, kind) for m in net.modules()) == 2
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"model.net.pooling='min' is not one of \['avg', 'max'\]"):
        SmallCNN(pooling="min")


def test_strided_cnn_halves_the_image_twice_without_pooling() -> None:
    net = StridedCNN(channels=(16, 32), hidden=100)
    x = torch.rand(5, 1, 28, 28)
    assert net.features(net.normalize(x)).shape == (5, 32, 7, 7)
    assert net(x).shape == (5, 10)
    assert net.features_penultimate(x).shape == (5, 100)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in net.modules())
    # Wong et al.'s network: 16*1*4*4+16 + 32*16*4*4+32 + 1568*100+100 + 100*10+10 parameters
    assert sum(p.numel() for p in net.parameters()) == 166_406
    with pytest.raises(ValueError, match="divisible by 4, got 30"):
        StridedCNN(image_size=30)


def test_strided_cnn_dropout_acts_only_in_training_mode() -> None:
    torch.manual_seed(0)
    net = StridedCNN(channels=(4, 8), hidden=64, dropout=0.5)
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    x = torch.rand(4, 1, 28, 28)
    net.train()
    assert not torch.allclose(net(x), net(x))  # a fresh mask per forward
    net.eval()
    assert torch.equal(net(x), net(x))  # what attacks and evaluation see
    with pytest.raises(ValueError, match=r"model.net.dropout must be in \[0, 1\), got 1.0"):
        StridedCNN(dropout=1.0)


def test_strided_cnn_checkpoint_keys_did_not_move_with_the_dropout_knob() -> None:
    """Checkpoints written before `dropout` existed still load."""
    keys = set(StridedCNN(dropout=0.3).state_dict())
    assert keys == {
        "normalize.mean", "normalize.std",
        "features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias",
        "head.1.weight", "head.1.bias", "head.3.weight", "head.3.bias",
    }  # fmt: skip


def test_strided_cnn_without_dropout_draws_no_random_numbers() -> None:
    """dropout=0 leaves the RNG stream alone, so recipes without it keep their random draws."""
    net = StridedCNN(channels=(4, 8), hidden=16).train()
    torch.manual_seed(0)
    net(torch.rand(2, 1, 28, 28))
    after_forward = torch.rand(1)
    torch.manual_seed(0)
    torch.rand(2, 1, 28, 28)
    assert torch.equal(after_forward, torch.rand(1))


def test_strided_cnn_stem_adds_one_full_resolution_convolution() -> None:
    net = StridedCNN(channels=(16, 32), stem=8, hidden=100)
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (1, 8, (3, 3), (1, 1)), (8, 16, (4, 4), (2, 2)), (16, 32, (4, 4), (2, 2)),
    ]  # fmt: skip
    x = torch.rand(3, 1, 28, 28)
    assert net.features[1](net.features[0](net.normalize(x))).shape == (3, 8, 28, 28)
    assert net(x).shape == (3, 10)
    # the plain network's 166,406 parameters, plus the stem (8*9+8) and conv1's 7 more inputs
    assert sum(p.numel() for p in net.parameters()) == 166_406 + 80 + 7 * 16 * 16
    with pytest.raises(ValueError, match=r"model\.net\.stem must be >= 0, got -1"):
        StridedCNN(stem=-1)
