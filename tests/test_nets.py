"""Network knobs that recipes set from YAML."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.nets import SmallCNN
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
