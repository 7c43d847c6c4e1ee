"""Shared machinery of the image DataModules: files, split, per-device batch, augmentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningDataModule
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from advlab.data.augment import random_crop, random_horizontal_flip, to_unit_float
from advlab.data.declared import check_declarations
from advlab.data.file_checks import file_problem
from advlab.data.generated import GeneratedData
from advlab.data.in_memory import BatchedTensorDataset, keep_batch
from advlab.data.sampler import ResumableShuffleSampler, resume_at, stream_position
from advlab.data.split import hold_out
from advlab.errors import ConfigError, DatasetFilesCorruptError, DatasetFilesMissingError
from advlab.threat_model import ThreatModel


class VisionDataModule(LightningDataModule):
    """An image-classification DataModule backed by a torchvision dataset class.

    torchvision parses the files (and downloads them in `prepare_data`); the decoded images are
    kept in memory as uint8 tensors and become float in [0, 1] after the batch reaches its device,
    where the training split is also augmented as a batch.

    Args:
        data_dir: folder that holds (or will hold) the torchvision dataset folder, e.g.
            `<data_dir>/MNIST/raw/` — point it at preloaded files on offline clusters.
        batch_size: global batch size; each of `trainer.world_size` processes gets an equal share.
        val_size: images held out of the training files for validation (fixed-seed split).
        split_seed: seed of the train/val split, independent of the training seed.
        num_workers: DataLoader workers (0 is fastest for in-memory tensors).
        pin_memory: pin host memory (helps host-to-GPU copies).
        download: try to download missing files in `prepare_data`.
        crop_padding: random-crop augmentation padding in pixels for training (0 = off).
        flip: random horizontal flips for training.
        eval_batch_size: global batch size for validation/test (default: `batch_size`).
        image_shape: (C, H, W) as the config declares it (networks are sized from the config);
            checked against the dataset's own `dims`.
        num_classes: the number of classes the config declares; checked like `image_shape`.
        mean, std: per-channel statistics of the images, declared for the networks (they
            normalize inside, with `${data.mean}`); checked to have one value per channel.
        threat_model: `{norm, eps}` of the attacks on this data (`advlab.threat_model`).
        generated: `{ckpt, fraction, labeler_ckpt, min_confidence}`: with a GAN checkpoint,
            `fraction` of every training batch is drawn from it (`advlab.data.generated`), the
            rest are real images; `batch_size` stays the size of the whole batch.
    """

    #: subclasses set these
    name: ClassVar[str]
    dims: ClassVar[tuple[int, int, int]]
    num_classes: ClassVar[int]
    fix_hint: ClassVar[str]

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        val_size: int = 5000,
        split_seed: int = 12345,
        num_workers: int = 0,
        pin_memory: bool = False,
        download: bool = True,
        crop_padding: int = 0,
        flip: bool = False,
        eval_batch_size: int | None = None,
        image_shape: tuple[int, int, int] | None = None,
        num_classes: int | None = None,
        threat_model: dict[str, Any] | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        generated: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        if val_size < 0:
            raise ConfigError(f"data.val_size must be >= 0, got {val_size}")
        if crop_padding < 0:
            raise ConfigError(f"data.crop_padding must be >= 0, got {crop_padding}")
        check_declarations(
            self.name,
            self.dims,
            self.num_classes,
            image_shape,
            num_classes,
            {"mean": mean, "std": std},
        )
        mean = None if mean is None else [float(v) for v in mean]
        std = None if std is None else [float(v) for v in std]
        #: None when the config names none (then attacks need their own eps)
        self.threat_model = None if threat_model is None else ThreatModel.from_config(threat_model)
        # plain values in the hyperparameters: checkpoints load with weights_only=True
        image_shape = None if image_shape is None else [int(v) for v in image_shape]
        threat_model = None if threat_model is None else dict(vars(self.threat_model))
        if isinstance(generated, DictConfig):
            generated = OmegaConf.to_container(generated, resolve=True)
        #: draws the generated share of training batches (None: real images only)
        self.generated = None
        if generated and (generated.get("ckpt") or generated.get("fraction")):
            self.generated = GeneratedData(
                **generated, image_shape=self.dims, num_classes=self.num_classes
            )
        self.save_hyperparameters(logger=False)
        self.data_dir = Path(data_dir).expanduser()
        self.data_train: Dataset | None = None
        self.data_val: Dataset | None = None
        self.data_test: Dataset | None = None
        self.batch_size_per_device = batch_size
        self.eval_batch_size_per_device = eval_batch_size or batch_size
        self._resume_position: dict[str, Any] = {}  # from a checkpoint (load_state_dict)

    # ---- files ------------------------------------------------------------------------------
    def required_files(self) -> list[Path]:
        """Every file torchvision needs for both splits."""
        raise NotImplementedError

    def _torchvision_dataset(self, train: bool, download: bool = False) -> Any:
        raise NotImplementedError

    def _to_tensors(self, dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, C, H, W) and int64 labels (N,) from a torchvision dataset."""
        raise NotImplementedError

    def missing_files(self) -> list[Path]:
        return [path for path in self.required_files() if not path.is_file()]

    def prepare_data(self) -> None:
        """Download missing files (rank 0 only); fail with the list of missing files otherwise."""
        if not self.missing_files():
            return
        reason = "downloads are disabled (data.download=false)"
        if self.hparams.download:
            try:
                for train in (True, False):
                    self._torchvision_dataset(train=train, download=True)
                reason = ""
            except Exception as err:  # any download failure means the same to the user
                reason = (
                    f"the download failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
                )
        missing = self.missing_files()
        if missing:
            raise DatasetFilesMissingError(self._missing_message(missing, reason))

    def _missing_message(self, missing: list[Path], reason: str) -> str:
        names = ", ".join(str(path.relative_to(self.data_dir)) for path in missing)
        return (
            f"{self.name}: {len(missing)} file(s) missing under {self.data_dir.resolve()}: {names}; "
            f"{reason}. Fix: run once with internet access (files download automatically), or "
            f"{self.fix_hint}, or set data.data_dir=<folder that has them>."
        )

    # ---- splits -----------------------------------------------------------------------------
    def per_device_batch_size(self, world_size: int, batch_size: int) -> int:
        if batch_size % world_size:
            raise ConfigError(
                f"data.batch_size={batch_size} does not divide across {world_size} processes "
                f"(trainer.devices x trainer.num_nodes); use a multiple of {world_size}"
            )
        return batch_size // world_size

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            world = self.trainer.world_size
            self.batch_size_per_device = self.per_device_batch_size(world, self.hparams.batch_size)
            eval_global = self.hparams.eval_batch_size or self.hparams.batch_size
            self.eval_batch_size_per_device = self.per_device_batch_size(world, eval_global)
        if self.data_train is not None:
            return
        missing = self.missing_files()
        if missing:
            raise DatasetFilesMissingError(
                self._missing_message(missing, "prepare_data did not fetch them")
            )
        train_images, train_labels = self._load_split(train=True)
        test_images, test_labels = self._load_split(train=False)
        self.data_train, self.data_val = hold_out(
            BatchedTensorDataset(train_images, train_labels),
            self.hparams.val_size,
            self.hparams.split_seed,
        )
        self.data_test = BatchedTensorDataset(test_images, test_labels)

    def file_problem(self, path: Path) -> str | None:
        """What is wrong with one required file (see `advlab.data.file_checks`), or None."""
        return file_problem(path)

    def _corrupt(self, detail: str) -> DatasetFilesCorruptError:
        return DatasetFilesCorruptError(
            f"{self.name}: {detail}. Fix: delete the damaged file(s) and run again with internet "
            f"access (they download), or {self.fix_hint}"
        )

    def _load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        for path in self.required_files():  # name the damaged file before torchvision trips on it
            problem = self.file_problem(path)
            if problem:
                raise self._corrupt(f"{path.resolve()} {problem}")
        split = "training" if train else "test"
        try:
            images, labels = self._to_tensors(self._torchvision_dataset(train=train))
        except Exception as err:  # torchvision's parsers fail in many ways on damaged files
            reason = (str(err).splitlines() or [""])[0][:200]
            raise self._corrupt(
                f"torchvision cannot read the {split} files under {self.data_dir.resolve()} "
                f"({type(err).__name__}: {reason})"
            ) from err
        if len(images) != len(labels):
            raise self._corrupt(
                f"the {split} files under {self.data_dir.resolve()} hold {len(images)} images but "
                f"{len(labels)} labels (files from different copies?)"
            )
        if tuple(images.shape[1:]) != tuple(self.dims):
            raise self._corrupt(
                f"the {split} images are {list(images.shape[1:])}, not {list(self.dims)}"
            )
        return images, labels

    # ---- loaders ----------------------------------------------------------------------------
    def _loader(
        self,
        dataset: Dataset | None,
        batch_size: int,
        sampler: ResumableShuffleSampler | None = None,
    ) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=keep_batch,  # whole batches from memory, one indexing op per tensor
            # its own generator: creating a loader iterator then draws nothing from the global
            # one, which a mid-epoch resume would otherwise replay out of order
            generator=torch.Generator().manual_seed(0),
            num_workers=self.hparams.num_workers,
            pin_memory=self.hparams.pin_memory,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if self.data_train is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        rank, world = (
            (0, 1) if self.trainer is None else (self.trainer.global_rank, self.trainer.world_size)
        )
        # the shuffle follows the run's seed (seed_everything), so reruns see the same batches
        sampler = ResumableShuffleSampler(
            self.data_train, num_replicas=world, rank=rank, seed=torch.initial_seed() % 2**31
        )
        real = self.batch_size_per_device
        if self.generated is not None:  # the same seed as the shuffle, its own stream per rank
            real = self.generated.start(torch.initial_seed() % 2**31, rank, real)
        resume_at(sampler, self._resume_position, real)
        self._resume_position = {}  # the first pass only
        return self._loader(self.data_train, real, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, self.eval_batch_size_per_device)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, self.eval_batch_size_per_device)

    # ---- device-side transform ----------------------------------------------------------------
    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """Training augmentation of a float batch in [0, 1]."""
        images = random_crop(images, self.hparams.crop_padding)
        if self.hparams.flip:
            images = random_horizontal_flip(images)
        return images

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        images = to_unit_float(images)
        if self.trainer is not None and self.trainer.training:
            if self.generated is not None:
                images, labels = self.generated.mix(images, labels)
            images = self.augment(images)
        return images, labels

    def state_dict(self) -> dict[str, Any]:
        """Where the shuffled and the generated streams are: a resumed run continues both."""
        state = self.generated.state_dict() if self.generated is not None else {}
        return state | ({"shuffle": stream_position(self.trainer)} if self.trainer else {})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_position = dict(state_dict.get("shuffle", {}))
        if self.generated is not None:
            self.generated.load_state_dict(state_dict)
