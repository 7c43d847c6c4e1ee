"""Generated data in training batches: exact shares, labels, pseudo-label filtering, seeds, DDP."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from omegaconf import open_dict

from advlab.data import MNISTDataModule
from advlab.data.generated import GeneratedData
from advlab.errors import ConfigError
from advlab.models import RobustClassifier
from advlab.train import train
from tests.gan_builders import ADAM, MNIST_SHAPE, TINY_CLASSIFIERS, make_gan, save_module

#: a labeler whose confidence spreads over (0, 1): a linear layer on the pixels
LINEAR_NET = {
    "_target_": "torch.nn.Sequential",
    "_args_": [
        {"_target_": "torch.nn.Flatten"},
        {"_target_": "torch.nn.Linear", "in_features": 784, "out_features": 10},
    ],
}


@pytest.fixture(scope="module")
def gan_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny conditional and unconditional GAN checkpoints and a labeler (untrained weights)."""
    root = tmp_path_factory.mktemp("gans")
    conditional, unconditional = make_gan(num_classes=10), make_gan()
    with torch.no_grad():  # classes that look different, as after training
        conditional.generator_ema.module.upsample[1].shift.weight.normal_()
    samples = unconditional.sample(256, seed=0).flatten(1)
    torch.manual_seed(0)
    labeler = RobustClassifier(net=LINEAR_NET, method={"_target_": "advlab.methods.Clean"},
                               optimizer=ADAM)  # fmt: skip
    with torch.no_grad():  # logits of the samples' deviations from their mean, of spread ~2
        linear = labeler.net[1]
        linear.weight.normal_()
        linear.weight.mul_(2 / (samples @ linear.weight.T).std(0, keepdim=True).T)
        linear.bias.copy_(-(linear.weight @ samples.mean(0)))
    classifier = RobustClassifier(
        net=TINY_CLASSIFIERS["mnist"], method={"_target_": "advlab.methods.Clean"}, optimizer=ADAM
    )
    files = {"cgan": conditional, "gan": unconditional, "labeler": labeler,
             "cifar_cgan": make_gan(image_shape=(3, 32, 32), num_classes=10),
             "classifier": classifier}  # fmt: skip
    return {name: save_module(module, root / f"{name}.ckpt") for name, module in files.items()}


def is_uint8_grid(images: torch.Tensor) -> torch.Tensor:
    """Per image: are all pixels k/255? Real digits are; a generator's pixels are not."""
    return ((images * 255 - (images * 255).round()).abs() < 1e-4).flatten(1).all(1)


class _RecordBatches(LightningModule):
    """Trains one parameter and keeps every training batch as the method would see it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        self.batches.append((batch[0].detach().clone(), batch[1].clone()))
        return (self.weight * batch[0].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def record_epoch(mnist_dir: Path, tmp_path: Path, **generated) -> list[tuple]:
    data = MNISTDataModule(
        data_dir=str(mnist_dir), batch_size=10, val_size=16, download=False, generated=generated
    )
    module = _RecordBatches()
    trainer = Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=data)
    return module.batches


def test_the_generated_share_of_every_batch_is_exact(
    mnist_dir: Path, tmp_path: Path, gan_files: dict
) -> None:
    batches = record_epoch(mnist_dir, tmp_path, ckpt=str(gan_files["cgan"]), fraction=0.7)
    # 80 training digits, 3 per batch of 10 (7 generated): 26 full batches and one of 2 real
    assert len(batches) == 27
    for images, labels in batches[:-1]:
        real = is_uint8_grid(images)
        assert images.shape == (10, *MNIST_SHAPE) and labels.dtype == torch.long
        assert real.tolist() == [True] * 3 + [False] * 7
    images, _ = batches[-1]
    assert is_uint8_grid(images).tolist() == [True] * 2 + [False] * 5  # round(2 * 7 / 3)
    real_seen = torch.cat([x[is_uint8_grid(x)] for x, _ in batches])
    assert len(real_seen) == 80  # every real digit once per epoch, as without generated data
    generated = torch.cat([x[~is_uint8_grid(x)] for x, _ in batches])
    assert len(torch.unique(generated.flatten(1), dim=0)) == len(generated)  # fresh every batch
    assert generated.min() >= 0 and generated.max() <= 1


def test_conditional_generator_labels_its_samples_with_the_requested_classes(
    gan_files: dict,
) -> None:
    data = GeneratedData(str(gan_files["cgan"]), fraction=0.5)
    images, labels = data.draw(200, torch.device("cpu"), seed=3)
    assert images.shape == (200, *MNIST_SHAPE) and set(labels.tolist()) == set(range(10))
    # the labels are the classes the generator drew: redrawing each with its label reproduces it
    z = torch.randn(200, data.latent_dim, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(images, ((data.generator(z, labels) + 1) / 2).clamp(0, 1))


def test_pseudo_labels_keep_only_confident_samples(gan_files: dict) -> None:
    net = RobustClassifier.load_from_checkpoint(gan_files["labeler"]).net.eval()
    everything = GeneratedData(str(gan_files["gan"]), 0.5, labeler_ckpt=str(gan_files["labeler"]))
    images, labels = everything.draw(300, torch.device("cpu"), seed=0)
    with torch.no_grad():
        probs = net(images).softmax(1)
    assert torch.equal(labels, probs.argmax(1))  # pseudo-labels: the labeler's predictions
    unsure = (probs.max(1).values < 0.6).float().mean()
    assert 0.1 < unsure < 0.9  # the test is only meaningful if the threshold drops some

    confident = GeneratedData(str(gan_files["gan"]), 0.5, labeler_ckpt=str(gan_files["labeler"]),
                              min_confidence=0.6)  # fmt: skip
    assert confident.kept_share == pytest.approx(1 - float(unsure), abs=0.1)
    images, labels = confident.draw(300, torch.device("cpu"), seed=0)
    with torch.no_grad():
        probs = net(images).softmax(1)
    assert len(images) == 300 and torch.equal(labels, probs.argmax(1))
    assert bool((probs.max(1).values >= 0.6).all())

    # a conditional generator keeps its classes; the labeler only filters
    filtered = GeneratedData(str(gan_files["cgan"]), 0.5, labeler_ckpt=str(gan_files["labeler"]),
                             min_confidence=0.3)  # fmt: skip
    images, labels = filtered.draw(100, torch.device("cpu"), seed=1)
    with torch.no_grad():
        probs = net(images).softmax(1)
    assert bool((probs.gather(1, labels[:, None]) >= 0.3).all())


def test_same_seed_same_samples_other_rank_or_batch_other_samples(gan_files: dict) -> None:
    def stream(seed: int, rank: int, batches: int = 2, start_at: int = 0) -> list[torch.Tensor]:
        data = GeneratedData(str(gan_files["cgan"]), fraction=0.5)
        data.start(seed, rank, batch_size=8)
        data.load_state_dict({"generated_batches": start_at})
        real, labels = torch.zeros(4, *MNIST_SHAPE), torch.zeros(4, dtype=torch.long)
        return [data.mix(real, labels)[0][4:] for _ in range(batches)]

    first, second = stream(seed=1, rank=0)
    assert first.shape == (4, *MNIST_SHAPE) and not torch.equal(first, second)
    assert torch.equal(first, stream(seed=1, rank=0)[0])  # reruns draw the same samples
    assert not torch.equal(first, stream(seed=1, rank=1)[0])  # another process, others
    assert not torch.equal(first, stream(seed=2, rank=0)[0])
    # a resumed run continues the stream where the checkpoint left it
    assert torch.equal(second, stream(seed=1, rank=0, batches=1, start_at=1)[0])


def test_bad_generated_data_options_are_refused(gan_files: dict) -> None:
    cgan, gan = str(gan_files["cgan"]), str(gan_files["gan"])
    cases = [
        ({"ckpt": None, "fraction": 0.7}, r"data.generated.fraction=0.7 needs data.generated.ckpt="),
        ({"ckpt": cgan, "fraction": 0.0}, r"data.generated.fraction=0.0 must be in \(0, 1\)"),
        ({"ckpt": cgan, "fraction": 1.0}, r"data.generated.fraction=1.0 must be in \(0, 1\)"),
        ({"ckpt": gan, "fraction": 0.5}, r"is an unconditional GAN: its samples need labels"),
        ({"ckpt": cgan, "fraction": 0.5, "min_confidence": 0.9}, r"needs a classifier to be conf"),
        ({"ckpt": str(gan_files["classifier"]), "fraction": 0.5},
         r"data.generated.ckpt=.*classifier.ckpt is not a GAN checkpoint"),
        ({"ckpt": str(gan_files["cifar_cgan"]), "fraction": 0.5},
         r"makes images of shape \(3, 32, 32\), but the data's are \(1, 28, 28\)"),
        ({"ckpt": gan, "fraction": 0.5, "labeler_ckpt": str(gan_files["labeler"]),
          "min_confidence": 0.999}, r"min_confidence=0.999 keeps [0-4]\.\d% of the samples"),
    ]  # fmt: skip
    for options, message in cases:
        with pytest.raises(ConfigError, match=message):
            MNISTDataModule(data_dir="unused", generated=options)
    data = MNISTDataModule(
        data_dir="unused", batch_size=4, generated={"ckpt": cgan, "fraction": 0.9}
    )
    with pytest.raises(ConfigError, match=r"fraction=0.9 leaves no real image in batches of 4"):
        data.generated.split(4)


def test_a_generated_data_run_is_deterministic_under_a_seed(
    compose_train, tmp_path: Path, gan_files: dict
) -> None:
    def weights(name: str, *overrides: str) -> dict[str, torch.Tensor]:
        cfg = compose_train(
            "experiment=mnist_pgd_at_gen", f"data.generated.ckpt={gan_files['cgan']}",
            "data.generated.fraction=0.7", "logger=none", "callbacks=last_checkpoint", *overrides,
        )  # fmt: skip
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / name)
            cfg.trainer.max_steps = cfg.trainer.limit_train_batches = 3
            cfg.trainer.limit_val_batches = 0
            cfg.trainer.enable_model_summary = False
            cfg.test = False
        assert cfg.data.generated.fraction == 0.7
        train(cfg)
        checkpoint = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)
        assert checkpoint["global_step"] == 3
        # the stream position travels with the checkpoint (exact resume)
        assert checkpoint["MNISTDataModule"]["generated_batches"] == 3
        return checkpoint["state_dict"]

    first, again, other = weights("a"), weights("b"), weights("c", "seed=7")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_generated_data_recipe_needs_its_checkpoint(compose_train) -> None:
    cfg = compose_train("experiment=mnist_pgd_at_gen", "logger=none")
    assert cfg.data.generated.ckpt is None
    with pytest.raises(
        ConfigError, match=r"^data.generated.fraction=0.3 needs data.generated.ckpt="
    ):
        train(cfg)


@pytest.mark.parametrize("training_digits", [6800, 59800])  # the 7,000-digit subset, full MNIST
def test_generated_data_recipe_takes_mnist_pgd_at_s_steps_and_warm_up(
    compose_train, training_digits: int
) -> None:
    """Generated images shrink the real share of a batch, so an epoch over the real digits takes
    more batches: the recipe's epochs must make mnist_pgd_at's steps on any number of digits."""

    base = compose_train("experiment=mnist_pgd_at", "logger=none", shrink=False)
    cfg = compose_train("experiment=mnist_pgd_at_gen", "logger=none", shrink=False)
    assert base.data.generated.fraction == 0 and cfg.data.generated.fraction == 0.3
    real_per_batch = cfg.data.batch_size - round(cfg.data.generated.fraction * cfg.data.batch_size)
    batches = math.ceil(training_digits / real_per_batch)  # per epoch of the real digits
    base_batches = math.ceil(training_digits / base.data.batch_size)
    for gen_epochs, base_epochs in [
        (cfg.trainer.max_epochs, base.trainer.max_epochs),
        (cfg.model.method.eps_warmup_epochs, base.model.method.eps_warmup_epochs),
    ]:
        assert gen_epochs * batches == pytest.approx(base_epochs * base_batches, rel=0.02)


@pytest.mark.slow  # two processes each import torch and Lightning: ~40 s on 2 busy cores
def test_ddp_ranks_draw_different_samples(mnist_dir: Path, tmp_path: Path, gan_files: dict) -> None:
    from tests.test_train import _run_train_py

    result = _run_train_py(
        f"hydra.run.dir={tmp_path / 'run'}", f"data.data_dir={mnist_dir}", "trainer=ddp_sim",
        "experiment=mnist_pgd_at_gen", f"data.generated.ckpt={gan_files['cgan']}",
        "data.generated.fraction=0.7", "data.batch_size=8", "data.val_size=16",
        "trainer.max_steps=1", "trainer.limit_val_batches=0",
        "test=false", "logger=csv", "extras.print_config=false", "model.method.attack.steps=1",
        "+callbacks.first_batch._target_=tests.gan_builders.SaveFirstTrainingBatch",
        f"+callbacks.first_batch.dirpath={tmp_path / 'batches'}",
    )  # fmt: skip
    assert result.returncode == 0, (result.stderr + result.stdout)[-3000:]
    x0, x1 = (torch.load(tmp_path / "batches" / f"rank{r}.pt")[0] for r in (0, 1))
    # 4 images per process: 1 real digit and round(0.7 * 4) = 3 generated ones
    assert is_uint8_grid(x0).tolist() == is_uint8_grid(x1).tolist() == [True, False, False, False]
    assert not torch.equal(x0[1:], x1[1:])  # each rank its own samples
    assert not torch.equal(x0[:1], x1[:1])  # and its own shard of the real digits
