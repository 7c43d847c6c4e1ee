"""Class-conditional GAN: networks, sampling with labels, learning the classes, per-class quality."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import hydra
import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from advlab.errors import ConfigError
from advlab.models import GAN
from advlab.nets import DCGANDiscriminator, DCGANGenerator
from advlab.quality import ClassAgreement
from advlab.train import train
from tests.conftest import REPO_ROOT
from tests.gan_builders import MNIST_SHAPE, TINY_CLASSIFIERS, make_gan, save_classifier, save_module

#: the unconditional generator's keys: checkpoints written before conditional GANs must still load
UNCONDITIONAL_GENERATOR_KEYS = [
    "project.0.weight", "project.1.weight", "project.1.bias", "project.1.running_mean",
    "project.1.running_var", "project.1.num_batches_tracked", "upsample.0.weight",
    "upsample.1.weight", "upsample.1.bias", "upsample.1.running_mean", "upsample.1.running_var",
    "upsample.1.num_batches_tracked", "upsample.3.weight", "upsample.3.bias",
]  # fmt: skip


def test_networks_take_labels_only_when_conditional() -> None:
    torch.manual_seed(0)
    plain = DCGANGenerator(latent_dim=8, width=8)
    assert list(plain.state_dict()) == UNCONDITIONAL_GENERATOR_KEYS
    generator = DCGANGenerator(latent_dim=8, width=8, num_classes=10).eval()
    discriminator = DCGANDiscriminator(width=8, num_classes=10).eval()
    z = torch.randn(4, 8)
    threes = generator(z, torch.full((4,), 3))
    # conditional BatchNorm starts as plain BatchNorm (scale 1, shift 0 for every class) ...
    assert torch.equal(threes, generator(z, torch.full((4,), 7)))
    with torch.no_grad():  # ... and each class's own scale and shift are what training moves
        generator.upsample[1].shift.weight[7] += 1.0
    sevens = generator(z, torch.full((4,), 7))
    assert threes.shape == (4, *MNIST_SHAPE) and not torch.allclose(threes, sevens)
    assert torch.equal(threes, generator(z, torch.full((4,), 3)))
    # projection: the same images get another logit for another class
    assert not torch.allclose(discriminator(threes, torch.full((4,), 3)),
                              discriminator(threes, torch.full((4,), 7)))  # fmt: skip
    with pytest.raises(ValueError, match="class-conditional \\(10 classes\\): pass labels"):
        generator(z)
    with pytest.raises(ValueError, match="DCGANDiscriminator is unconditional"):
        DCGANDiscriminator(width=8)(threes, torch.zeros(4, dtype=torch.long))


def test_conditional_sampling_returns_the_requested_labels() -> None:
    gan = make_gan(num_classes=10)
    with torch.no_grad():  # as if trained: classes look different
        gan.generator_ema.module.upsample[1].shift.weight.normal_()
    images, labels = gan.sample(12, seed=1)
    assert images.shape == (12, *MNIST_SHAPE) and images.min() >= 0 and images.max() <= 1
    assert labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]  # every class in turn
    fives, labels = gan.sample(3, labels=5, seed=1)
    assert labels.tolist() == [5, 5, 5]
    _, labels = gan.sample(3, labels=[9, 0, 4])
    assert labels.tolist() == [9, 0, 4]
    # the same seed and labels give the same images; the labels change them
    assert torch.equal(fives, gan.sample(3, labels=5, seed=1)[0])
    assert not torch.equal(fives, gan.sample(3, labels=6, seed=1)[0])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        gan.sample(2, labels=10)
    with pytest.raises(ValueError, match="unconditional"):
        make_gan().sample(2, labels=1)
    assert isinstance(make_gan().sample(2), torch.Tensor)  # unconditional: images only


def test_bad_num_classes_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model.num_classes=1 must be an integer >= 2"):
        make_gan(num_classes=1)
    with pytest.raises(ConfigError, match=r"model.num_classes=10 but the data has 2 classes"):
        make_gan(num_classes=10).configure_for_data(
            SimpleNamespace(dims=MNIST_SHAPE, name="Two", num_classes=2)
        )


class _Spy(torch.nn.Module):
    """Wraps a network and records the labels of every call."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.calls.append((len(x), labels.tolist()))
        return self.net(x, labels)


def test_fakes_are_drawn_and_judged_for_the_labels_of_the_real_batch(tmp_path: Path) -> None:
    gan = make_gan(num_classes=10, ema_decay=0.0)
    gan.generator, gan.discriminator = _Spy(gan.generator), _Spy(gan.discriminator)
    labels = torch.tensor([3, 1, 4, 1, 5, 9])
    images = torch.rand(6, *MNIST_SHAPE, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(
        accelerator="cpu", max_steps=2, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(gan, train_dataloaders=DataLoader(TensorDataset(images, labels), batch_size=6))
    y = labels.tolist()
    # D step: fakes for y, then one D pass over real + fake with y twice; G step: fakes for y, judged as y
    assert gan.generator.calls == [(6, y), (6, y)]
    assert gan.discriminator.calls == [(12, y + y), (6, y)]


class _ClassOfFirstPixel(torch.nn.Module):
    """A "classifier" whose prediction is round(9 * first pixel): its verdicts are known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot((x[:, 0, 0, 0] * 9).round().long(), 10).float()


def test_class_agreement_counts_hits_per_requested_class() -> None:
    agreement = ClassAgreement(_ClassOfFirstPixel(), num_classes=10)
    images = torch.zeros(6, *MNIST_SHAPE)
    images[:, 0, 0, 0] = torch.tensor([3, 3, 3, 5, 5, 0]) / 9  # what the classifier sees
    agreement.update(images, torch.tensor([3, 3, 4, 5, 1, 0]))
    values = agreement.compute()
    assert values["all"].item() == pytest.approx(4 / 6)
    shares = values["per_class"]
    assert shares[3].item() == 1.0 and shares[4].item() == 0.0 and shares[5].item() == 1.0
    assert shares[1].item() == 0.0 and shares[0].item() == 1.0
    assert math.isnan(shares[2].item())  # never requested
    agreement.reset()
    assert agreement.counts.sum() == 0


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_classifier(TINY_CLASSIFIERS["mnist"], tmp_path_factory.mktemp("c") / "mnist.ckpt")


def test_model_cgan_logs_fid_and_per_class_quality(
    compose_train, classifier_ckpt: Path, tmp_path: Path
) -> None:
    cfg = compose_train(
        "model=cgan", "logger=none", "trainer.fast_dev_run=true", "model.metrics.num_samples=20",
        f"model.metrics.feature_ckpt={classifier_ckpt}", "model.generator.width=8",
        "model.discriminator.width=8",
    )  # fmt: skip
    assert cfg.model.num_classes == 10 and cfg.callbacks.model_checkpoint.monitor == "val/fid"
    metrics = train(cfg)
    assert math.isfinite(metrics["val/fid"])
    per_class = [metrics[f"val/class_acc_{k}"] for k in range(10)]
    assert all(0.0 <= share <= 1.0 for share in per_class)
    # 20 samples, 2 per class: the overall share is the mean of the per-class ones
    assert metrics["val/class_acc"] == pytest.approx(sum(per_class) / 10, abs=1e-6)
    assert (tmp_path / "samples" / "epoch_000.png").is_file()


def test_cgan_checkpoint_reloads_and_the_sample_script_keeps_the_labels(tmp_path: Path) -> None:
    import importlib.util

    gan = make_gan(num_classes=10)
    path = save_module(gan, tmp_path / "cgan.ckpt")
    reloaded = GAN.load_from_checkpoint(path)
    assert reloaded.conditional and torch.equal(reloaded.fixed_labels, torch.arange(4) % 10)
    images, _ = reloaded.sample(5, labels=2, seed=3)
    assert torch.equal(images, gan.sample(5, labels=2, seed=3)[0])

    spec = importlib.util.spec_from_file_location(
        "sample_script", REPO_ROOT / "scripts" / "sample.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "digits"
    script.main(["--ckpt", str(path), "--n", "20", "--seed", "3", "--out", str(out)])
    saved_labels = torch.load(out.with_suffix(".labels.pt"), weights_only=True)
    assert saved_labels.tolist() == [k % 10 for k in range(20)]
    assert torch.equal(
        torch.load(out.with_suffix(".pt"), weights_only=True), gan.sample(20, seed=3)[0]
    )


def test_model_gan_with_num_classes_is_conditional(compose_train) -> None:
    gan = hydra.utils.instantiate(compose_train("model=gan", "model.num_classes=10").model)
    assert gan.conditional and gan.generator.num_classes == 10
    assert gan.discriminator.embed is not None
