"""The classifier networks: shapes, sizes, and the checks that refuse a network that cannot work."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import advlab.nets
from advlab.nets import PreActResNet18, SmallCNN, StridedCNN

NETS_DIR = Path(advlab.nets.__file__).parent


def test_small_cnn_is_the_trades_mnist_network() -> None:
    net = SmallCNN()
    x = torch.rand(5, 1, 28, 28)
    assert net(x).shape == (5, 10)
    assert net.features_penultimate(x).shape == (5, 200)
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 32, (3, 3)), (32, 32, (3, 3)), (32, 64, (3, 3)), (64, 64, (3, 3)),
    ]  # fmt: skip
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 2
    # convs 320 + 9,248 + 18,496 + 36,928; head 1024*200+200 + 200*200+200 + 200*10+10
    assert sum(p.numel() for p in net.parameters()) == 312_202


def test_small_cnn_is_sized_from_the_image() -> None:
    net = SmallCNN(in_channels=3, num_classes=7, image_size=32, channels=(4, 8), hidden=16,
                   mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))  # fmt: skip
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    assert net.num_classes == 7
    smallest = SmallCNN(channels=(2, 2), hidden=4, image_size=16)  # one pixel left per channel
    assert smallest(torch.rand(1, 1, 16, 16)).shape == (1, 10)


def test_strided_cnn_halves_the_image_twice_without_pooling() -> None:
    net = StridedCNN(channels=(16, 32), hidden=100)
    x = torch.rand(5, 1, 28, 28)
    assert net.features(net.normalize(x)).shape == (5, 32, 7, 7)
    assert net(x).shape == (5, 10)
    assert net.features_penultimate(x).shape == (5, 100)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in net.modules())
    # Wong et al.'s network: 16*1*4*4+16 + 32*16*4*4+32 + 1568*100+100 + 100*10+10 parameters
    assert sum(p.numel() for p in net.parameters()) == 166_406


def test_strided_cnn_head_is_one_plain_sequential() -> None:
    net = StridedCNN(channels=(4, 8), hidden=16)
    assert not any(isinstance(m, nn.Sequential) for m in net.head)
    assert set(net.state_dict()) == {
        "normalize.mean", "normalize.std",
        "features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias",
        "head.1.weight", "head.1.bias", "head.3.weight", "head.3.bias",
    }  # fmt: skip


@pytest.mark.parametrize("net", [SmallCNN, StridedCNN])
def test_classifiers_draw_no_random_numbers_in_a_forward_pass(net: type[nn.Module]) -> None:
    """Nothing random inside (no dropout): training mode and eval mode compute the same logits,
    and a forward pass leaves the RNG stream to the training loop."""
    model = net(channels=(4, 8), hidden=16).train()
    x = torch.rand(2, 1, 28, 28)
    torch.manual_seed(0)
    train_logits = model(x)
    after_forward = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after_forward, torch.rand(1))
    assert torch.equal(train_logits, model.eval()(x))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SmallCNN(image_size=14), r"^SmallCNN needs images of at least 16x16 pixels, got 14$"),
        (lambda: SmallCNN(channels=(4, 8, 16)), r"^SmallCNN needs two channel widths"),
        (lambda: StridedCNN(image_size=30), r"^StridedCNN needs a positive image size divisible by 4, got 30$"),
        (lambda: StridedCNN(channels=(4,)), r"^StridedCNN needs two channel widths"),
    ],
)  # fmt: skip
def test_a_network_that_cannot_work_is_one_sentence(build, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        build()
    assert "\n" not in str(info.value)


def test_preact_resnet_takes_any_image_size() -> None:
    net = PreActResNet18(in_channels=1, width=4, mean=(0.5,), std=(0.5,))
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_nets_import_no_other_part_of_advlab() -> None:
    """Networks are plain torch.nn: a user can copy one out, and nothing above them can form an
    import cycle through them."""
    outside = []
    for path in sorted(NETS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            outside += [
                f"{path.name}: {name}"
                for name in names
                if name.split(".")[0] == "advlab" and not name.startswith("advlab.nets")
            ]
    assert outside == []
