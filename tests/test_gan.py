"""GAN: manual-optimization steps, sampling, checkpoints, FID/KID, bad input, end-to-end runs."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import hydra
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import open_dict
from torch.utils.data import DataLoader, TensorDataset

from advlab.callbacks import CheckpointIfMonitored, GANSampleGrid
from advlab.errors import ConfigError
from advlab.models import GAN
from advlab.models.gan_step import TrainingDivergedError, ema_average
from advlab.nets import SmallCNN
from advlab.quality import ClassifierFeatures, QualityMetrics, build_quality_metrics
from advlab.train import train
from tests.conftest import REPO_ROOT, experiment_options
from tests.gan_builders import MNIST_SHAPE, TINY_CLASSIFIERS, make_gan, save_classifier


def tiny_loader(n: int = 24, shape=MNIST_SHAPE, batch_size: int = 8) -> DataLoader:
    images = torch.rand(n, *shape, generator=torch.Generator().manual_seed(1))
    return DataLoader(TensorDataset(images, torch.zeros(n, dtype=torch.long)), batch_size)


def fit(model: GAN, tmp_path: Path, batches: int = 3, epochs: int = 1, callbacks=()) -> Trainer:
    trainer = Trainer(
        accelerator="cpu", max_epochs=epochs, limit_train_batches=batches, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, callbacks=list(callbacks),
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=tiny_loader())
    return trainer


def state(model: GAN) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict, after: dict, prefix: str) -> list[bool]:
    return [not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)]


# ---- training steps ---------------------------------------------------------------------------
def test_training_steps_change_both_networks_and_nothing_else(tmp_path: Path) -> None:
    model = make_gan()
    before = state(model)
    trainer = fit(model, tmp_path, batches=3)
    after = state(model)
    assert trainer.global_step == 6  # both optimizers step through Lightning's wrappers
    weights = [k for k in before if k.endswith(("weight", "original", "bias"))]
    for prefix in ("generator.", "discriminator.", "generator_ema."):
        moved = [not torch.equal(before[k], after[k]) for k in weights if k.startswith(prefix)]
        assert moved and all(moved), prefix
    assert torch.equal(before["fixed_noise"], after["fixed_noise"])
    assert int(after["generator_ema.n_averaged"]) == 3  # one EMA update per generator step
    assert set(before) == set(after)


def test_discriminator_steps_leave_the_generator_alone(tmp_path: Path) -> None:
    model = make_gan(d_steps_per_g_step=4, ema_decay=0.0)
    before = state(model)
    trainer = fit(model, tmp_path, batches=3)  # 3 D updates, no G update yet
    after = state(model)
    assert trainer.global_step == 3
    assert model.generator_ema is None
    # weights only: fakes for D are drawn in train mode, so G's BatchNorm statistics move
    generator_weights = [f"generator.{name}" for name, _ in model.generator.named_parameters()]
    assert generator_weights and all(torch.equal(before[k], after[k]) for k in generator_weights)
    assert any(changed(before, after, "discriminator."))


def test_scheduler_decays_each_optimizer_over_its_own_steps(tmp_path: Path) -> None:
    linear_decay = {"_target_": "torch.optim.lr_scheduler.PolynomialLR", "_partial_": True}
    model = make_gan(d_steps_per_g_step=2, scheduler=linear_decay)
    trainer = fit(model, tmp_path, batches=3)  # 3 D steps, 1 G step (after batch 1)
    scheduler_g, scheduler_d = model.lr_schedulers()
    assert (scheduler_g.total_iters, scheduler_d.total_iters) == (1, 3)
    assert [opt.param_groups[0]["lr"] for opt in trainer.optimizers] == [0.0, 0.0]


# ---- sampling and checkpoints -----------------------------------------------------------------
@pytest.mark.parametrize("shape", [MNIST_SHAPE, (3, 32, 32)])
def test_sample_shape_range_and_seed(shape) -> None:
    model = make_gan(image_shape=shape)
    images = model.sample(5, seed=3)
    assert images.shape == (5, *shape) and images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert torch.equal(images, model.sample(5, seed=3))
    assert not torch.equal(images, model.sample(5, seed=4))
    assert model.generator.training  # sampling restores the training mode


def test_checkpoint_reload_gives_the_same_samples(tmp_path: Path) -> None:
    model = make_gan()
    trainer = fit(model, tmp_path, batches=2)
    path = tmp_path / "gan.ckpt"
    trainer.save_checkpoint(path)
    reloaded = GAN.load_from_checkpoint(path)
    assert reloaded.hparams.image_shape == list(MNIST_SHAPE)
    assert torch.equal(model.sample(6, seed=7), reloaded.sample(6, seed=7))
    # EMA is what samples: it differs from the raw generator after training
    ema, raw = reloaded.generator_ema.module, reloaded.generator
    assert reloaded.sampler is ema
    assert not torch.equal(ema.upsample[0].weight, raw.upsample[0].weight)
    # use_buffers: BatchNorm statistics are averaged too, not copied from the generator
    assert not torch.equal(ema.upsample[1].running_mean, raw.upsample[1].running_mean)


def test_ema_average_warms_up_then_keeps_its_decay() -> None:
    averaged, current = torch.zeros(3), torch.ones(3)
    # first averages: decay (1 + n) / (10 + n), so the random initial weights fade fast
    first = ema_average(averaged, current, torch.tensor(0), decay=0.999)
    assert torch.allclose(first, torch.full((3,), 0.9))
    later = ema_average(averaged, current, torch.tensor(100_000), decay=0.999)
    assert torch.allclose(later, torch.full((3,), 0.001))
    # an integer buffer (BatchNorm's batch count) follows the model
    count = ema_average(torch.tensor(2), torch.tensor(7), torch.tensor(5), decay=0.999)
    assert count.item() == 7 and count.dtype == torch.long


def test_nan_weights_are_never_saved(tmp_path: Path) -> None:
    model = make_gan()
    trainer = fit(model, tmp_path, batches=1)
    with torch.no_grad():
        model.generator.upsample[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(
        TrainingDivergedError, match=r"weights generator.upsample.0.weight are not finite"
    ):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()


class _PoisonDiscriminator(Callback):
    """NaN in the discriminator's output from epoch 1 on: its loss becomes NaN."""

    def on_train_epoch_start(self, trainer: Trainer, pl_module: GAN) -> None:
        if trainer.current_epoch == 1:
            with torch.no_grad():
                pl_module.discriminator.head.bias.fill_(float("nan"))


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    model = make_gan()
    last = ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None, every_n_epochs=1)
    with pytest.raises(
        TrainingDivergedError,
        match=r"the discriminator loss is not finite \(NaN or inf\) at epoch 1",
    ):
        trainer = Trainer(
            accelerator="cpu", max_epochs=3, limit_train_batches=2, limit_val_batches=0,
            logger=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[last, _PoisonDiscriminator()], default_root_dir=tmp_path,
        )  # fmt: skip
        trainer.fit(model, train_dataloaders=tiny_loader())
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 4
    assert all(
        torch.isfinite(t).all() for t in checkpoint["state_dict"].values() if t.is_floating_point()
    )


# ---- bad input --------------------------------------------------------------------------------
def test_image_size_the_networks_cannot_make_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"cannot make images of shape \(1, 30, 30\).*multiples of 4"
    ):
        make_gan(image_shape=(1, 30, 30))
    with pytest.raises(ConfigError, match=r"cannot make images of shape \(3, 33, 33\)"):
        make_gan(image_shape=(3, 33, 33))
    with pytest.raises(
        ConfigError, match=r"^model.image_shape=None must be \(channels, height, width\)"
    ):
        make_gan(image_shape=None)
    with pytest.raises(
        ConfigError, match=r"model=gan makes images of shape \(1, 28, 28\) but Odd images are"
    ):
        make_gan().configure_for_data(SimpleNamespace(dims=(3, 32, 32), name="Odd"))


def test_data_shape_other_than_image_shape_is_refused_before_training(compose_train) -> None:
    cfg = compose_train("model=gan", "model.image_shape=[3,32,32]", "logger=none")
    with pytest.raises(
        ConfigError, match=r"makes images of shape \(3, 32, 32\) but MNIST images are \(1, 28, 28\)"
    ):
        train(cfg)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"model.loss='wgan' is not one of bce, hinge"):
        make_gan(loss="wgan")
    with pytest.raises(ConfigError, match=r"model.ema_decay=1.0 is outside \[0, 1\)"):
        make_gan(ema_decay=1.0)
    with pytest.raises(ConfigError, match=r"model.d_steps_per_g_step must be an integer >= 1"):
        make_gan(d_steps_per_g_step=0)
    with pytest.raises(ConfigError, match=r"model.metrics has unknown keys \['fid_every'\]"):
        make_gan(metrics={"fid_every": 2})
    data = SimpleNamespace(dims=MNIST_SHAPE, name="MNIST", num_classes=10)
    with pytest.raises(
        ConfigError, match=r"model.metrics.feature_ckpt=missing.ckpt: no file there"
    ):
        make_gan(metrics={"feature_ckpt": "missing.ckpt"}).configure_for_data(data)
    with pytest.raises(
        ConfigError, match=r"model.metrics.feature='vgg' is not one of auto, classifier, incep"
    ):
        build_quality_metrics(MNIST_SHAPE, feature="vgg")
    with pytest.raises(
        ConfigError, match=r"^model.metrics.feature=classifier needs model.metrics.feature_ckpt="
    ):
        make_gan(metrics={"feature": "classifier"}).configure_for_data(data)


def test_inception_offline_fails_with_one_clear_line(monkeypatch) -> None:
    import torchmetrics.image.fid as fid_module

    from advlab.quality.metrics import InceptionFeatures

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr("advlab.quality.metrics.InceptionFeatures", InceptionFeatures)
    monkeypatch.setattr(fid_module, "NoTrainInceptionV3", offline)
    with pytest.raises(
        ConfigError,
        match=r"model.metrics.feature=inception needs the torch-fidelity package.*no network.*feature_ckpt=",
    ):
        build_quality_metrics(MNIST_SHAPE, feature="inception")
    # the default falls back to no FID, and says why and what to do in one line
    metrics, line = build_quality_metrics(MNIST_SHAPE, feature="auto")
    assert metrics is None
    assert line.startswith("FID/KID skipped: Inception-v3 is not available (ConnectionError: no ")
    assert "model.metrics.feature_ckpt=<a model=robust checkpoint" in line


class _FakeInception(torch.nn.Module):
    """Stands in for Inception-v3 (no download): the mean pixel of each image, 1 feature."""

    num_features = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((1, 2, 3))[:, None]


def test_default_feature_space_is_inception_when_it_loads_and_the_classifier_when_given(
    monkeypatch, feature_ckpt: Path, caplog
) -> None:
    monkeypatch.setattr("advlab.quality.metrics.InceptionFeatures", _FakeInception)
    data = SimpleNamespace(dims=MNIST_SHAPE, name="MNIST", num_classes=10)
    lines = {}
    for name, metrics in {"inception": {}, "classifier": {"feature_ckpt": str(feature_ckpt)},
                          "off": {"feature": "none"}}.items():  # fmt: skip
        model = make_gan(metrics=metrics)
        caplog.clear()
        with caplog.at_level("INFO"):
            model.configure_for_data(data)
        said = [r.message for r in caplog.records if r.message.startswith("GAN quality: ")]
        assert len(said) == 1, said
        lines[name] = said[0]
        extractor = None if model._quality is None else type(model._quality.extractor).__name__
        assert extractor == {"inception": "_FakeInception", "classifier": "ClassifierFeatures",
                             "off": None}[name]  # fmt: skip
    assert (
        lines["inception"]
        == "GAN quality: FID/KID in the Inception-v3 feature space (torch-fidelity)"
    )
    assert (
        "feature space of the classifier model.metrics.feature_ckpt (SmallCNN, 16 features)"
        in lines["classifier"]
    )
    assert lines["off"] == "GAN quality: FID/KID off (model.metrics.feature=none)"


# ---- quality metrics --------------------------------------------------------------------------
class PooledPixels(torch.nn.Module):
    """A tiny feature extractor with known statistics: 16 means of 7x7 pixel blocks."""

    def features_penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 7).flatten(1)


def test_fid_and_kid_of_identical_and_different_image_sets() -> None:
    images = torch.rand(200, *MNIST_SHAPE, generator=torch.Generator().manual_seed(0))
    metrics = QualityMetrics(ClassifierFeatures(PooledPixels(), MNIST_SHAPE), 5, 100)
    for chunk in images.split(64):
        metrics.update(chunk, real=True)
        metrics.update(chunk, real=False)
    same = metrics.compute()
    assert abs(same["fid"].item()) < 1e-6
    assert abs(same["kid"].item()) < 1e-3
    metrics.reset()  # keeps the real features
    metrics.update(images.clamp(0, 0.5), real=False)
    different = metrics.compute()
    # block means move from 0.5 to 0.375: 16 * 0.125^2 = 0.25, plus a small covariance term
    assert 0.24 < different["fid"].item() < 0.30
    assert different["kid"].item() > 0.05
    assert metrics.num_real == 200 and metrics.num_fake == 200


def test_extractor_is_frozen_and_stays_in_eval_mode() -> None:
    torch.manual_seed(0)
    net = SmallCNN(channels=(4, 8), hidden=16)
    net.features.insert(1, torch.nn.BatchNorm2d(4))  # BatchNorm and dropout: train != eval
    net.head.insert(1, torch.nn.Dropout(0.5))
    features = ClassifierFeatures(net, MNIST_SHAPE)
    before = {k: v.clone() for k, v in features.state_dict().items()}
    features.train()
    assert not net.training and features.num_features == 16
    assert not any(p.requires_grad for p in features.parameters())
    x = torch.rand(4, *MNIST_SHAPE)
    assert torch.equal(features(x), features(x))  # no dropout, no batch statistics
    assert all(torch.equal(before[k], v) for k, v in features.state_dict().items())


@pytest.fixture(scope="module")
def feature_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MNIST classifier checkpoint: the feature extractor of the end-to-end runs."""
    return save_classifier(TINY_CLASSIFIERS["mnist"], tmp_path_factory.mktemp("f") / "mnist.ckpt")


def test_metrics_come_from_a_classifier_checkpoint_and_skip_without_one(
    feature_ckpt: Path, caplog
) -> None:
    model = make_gan(metrics={"feature_ckpt": str(feature_ckpt)})
    model.configure_for_data(SimpleNamespace(dims=MNIST_SHAPE, name="MNIST"))
    assert isinstance(model._quality.extractor, ClassifierFeatures)
    assert model._quality.extractor.num_features == 16
    model = make_gan(metrics={"feature_ckpt": None})
    with caplog.at_level("INFO"):
        model.configure_for_data(SimpleNamespace(dims=MNIST_SHAPE, name="MNIST"))
    assert model._quality is None
    skipped = [r.message for r in caplog.records if "skipped" in r.message]
    assert len(skipped) == 1 and "model.metrics.feature_ckpt=" in skipped[0]
    assert "quality" not in " ".join(model.state_dict())  # the extractor is not part of the GAN


# ---- configs and end-to-end runs --------------------------------------------------------------
def test_model_gan_brings_its_callbacks_unless_the_command_line_says_otherwise(
    compose_train,
) -> None:
    cfg = compose_train("model=gan")
    assert isinstance(hydra.utils.instantiate(cfg.model), GAN)
    assert cfg.callbacks.model_checkpoint.monitor == "val/fid"
    assert cfg.callbacks.model_checkpoint._target_ == "advlab.callbacks.CheckpointIfMonitored"
    assert not compose_train("model=gan", "callbacks=none").get("callbacks")
    assert (
        compose_train("model=gan", "callbacks=default").callbacks.model_checkpoint.monitor
        == "val/robust_acc_none"  # model=gan has no val attack: preflight says so in one line
    )
    robust = compose_train()
    steps = robust.model.val_attack.steps
    assert robust.callbacks.model_checkpoint.monitor == f"val/robust_acc_pgd{steps}"


@pytest.mark.parametrize("data", ["mnist", "cifar10"])
def test_fast_dev_run_with_metrics(compose_train, tmp_path: Path, data: str) -> None:
    classifier = save_classifier(TINY_CLASSIFIERS[data], tmp_path / "classifier.ckpt")
    cfg = compose_train(
        "model=gan", f"data={data}", "logger=none", "trainer.fast_dev_run=true",
        "model.metrics.num_samples=16", f"model.metrics.feature_ckpt={classifier}",
    )  # fmt: skip
    metrics = train(cfg)
    assert math.isfinite(metrics["val/fid"]) and metrics["val/fid"] >= 0
    assert math.isfinite(metrics["val/kid"])
    assert math.isfinite(metrics["train/loss_d_step"])
    assert math.isfinite(metrics["train/loss_g_step"])
    assert (tmp_path / "samples" / "epoch_000.png").is_file()


@pytest.mark.parametrize("experiment", experiment_options("gan") + experiment_options("cgan"))
def test_fast_dev_run_of_every_gan_experiment(compose_train, experiment: str) -> None:
    cfg = compose_train(f"experiment={experiment}", "logger=none", "trainer.fast_dev_run=true")
    assert cfg.test is False and cfg.optimized_metric == "val/fid_best"
    assert cfg.callbacks.model_checkpoint.monitor == "val/fid"
    with open_dict(cfg):  # tiny networks: the recipe's widths are not what is tested here
        cfg.model.generator.width = cfg.model.discriminator.width = 8
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss_d_step"])


def test_checkpoint_policy_without_metrics_keeps_last_only(compose_train, tmp_path: Path) -> None:
    cfg = compose_train("model=gan", "logger=csv")
    with open_dict(cfg):
        cfg.trainer.max_epochs = 2
        cfg.trainer.limit_train_batches = 2
        cfg.trainer.limit_val_batches = 1
        cfg.trainer.enable_model_summary = False
    metrics = train(cfg)
    assert "val/fid" not in metrics
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "epoch_000.png",
        "epoch_001.png",
    ]


def test_checkpoint_policy_with_metrics_keeps_the_best_fid(
    compose_train, feature_ckpt: Path, tmp_path: Path
) -> None:
    cfg = compose_train(
        "model=gan",
        "logger=none",
        f"model.metrics.feature_ckpt={feature_ckpt}",
        "model.metrics.num_samples=16",
    )
    with open_dict(cfg):
        cfg.trainer.max_epochs = 2
        cfg.trainer.limit_train_batches = 2
        cfg.trainer.limit_val_batches = 1
        cfg.trainer.enable_model_summary = False
        cfg.model.metrics.every_n_epochs = 2  # epoch 0 logs no FID: nothing kept, no error
    metrics = train(cfg)
    assert math.isfinite(metrics["val/fid"]) and metrics["val/fid_best"] == metrics["val/fid"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch_001.ckpt",
        "last.ckpt",
    ]


def test_resume_from_last_ckpt_equals_an_uninterrupted_run(compose_train, tmp_path: Path) -> None:
    def run(name: str, epochs: int, *overrides: str) -> dict:
        cfg = compose_train("model=gan", "logger=none", *overrides)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / name)
            cfg.trainer.max_epochs = epochs
            cfg.trainer.limit_train_batches = 2
            cfg.trainer.limit_val_batches = 1
            cfg.trainer.enable_model_summary = False
            cfg.model.generator.width = cfg.model.discriminator.width = 8
        train(cfg)
        # what advlab writes (RNG states, EMA, hyperparameters) loads without unpickling code
        return torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)

    straight = run("straight", 2)
    run("resumed", 1)
    resumed = run("resumed", 2, "ckpt_path=last")
    assert straight["global_step"] == resumed["global_step"] == 8
    assert int(resumed["state_dict"]["generator_ema.n_averaged"]) == 4
    assert straight["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    model = GAN.load_from_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    images = model.sample(4, seed=1)
    assert images.shape == (4, *MNIST_SHAPE) and images.min() >= 0 and images.max() <= 1


def test_training_statistics_are_logged(tmp_path: Path) -> None:
    model = make_gan()
    trainer = fit(model, tmp_path, batches=2)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for name in ("loss_d", "loss_g", "d_real", "d_fake"):
        assert math.isfinite(metrics[f"train/{name}_epoch"]), name
    # Lightning's grad_norm, after the backward pass: both networks received gradients
    assert metrics["train/grad_norm_d_epoch"] > 0 and metrics["train/grad_norm_g_epoch"] > 0


def test_callback_classes_are_exported() -> None:
    assert issubclass(CheckpointIfMonitored, ModelCheckpoint)
    assert GANSampleGrid(dirpath=None).dirpath is None


def test_sample_script_writes_png_and_tensor(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "sample_script", REPO_ROOT / "scripts" / "sample.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    model = make_gan()
    trainer = fit(model, tmp_path, batches=1)
    trainer.save_checkpoint(tmp_path / "gan.ckpt")
    out = tmp_path / "out" / "digits"
    script.main(
        ["--ckpt", str(tmp_path / "gan.ckpt"), "--n", "10", "--seed", "5", "--out", str(out)]
    )
    images = torch.load(out.with_suffix(".pt"))
    assert images.shape == (10, *MNIST_SHAPE) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, model.sample(10, seed=5))
    assert out.with_suffix(".png").is_file()
    with pytest.raises(SystemExit, match="no checkpoint at"):
        script.main(["--ckpt", str(tmp_path / "missing.ckpt")])


@pytest.mark.slow  # two processes each import torch and Lightning: ~40 s on 2 busy cores
def test_train_py_trains_the_gan_on_two_cpu_processes(mnist_dir: Path, tmp_path: Path) -> None:
    from tests.test_train import _run_train_py

    run_dir = tmp_path / "ddp"
    result = _run_train_py(
        f"hydra.run.dir={run_dir}", f"data.data_dir={mnist_dir}", "model=gan", "trainer=ddp_sim",
        "data.batch_size=8", "data.eval_batch_size=8", "data.val_size=16", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "logger=csv",
        "extras.print_config=false", "model.generator.width=8", "model.discriminator.width=8",
        "model.metrics.feature=none",  # a subprocess: the test's offline Inception does not reach it
    )  # fmt: skip
    output = result.stderr + result.stdout
    assert result.returncode == 0, output[-3000:]
    assert "MEMBER: 2/2" in output
    assert "ddp_find_unused_parameters_true" in output
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4  # 2 batches x (D step + G step)
    assert int(checkpoint["state_dict"]["generator_ema.n_averaged"]) == 2
    assert (run_dir / "samples" / "epoch_000.png").is_file()
