"""`SegmentationDataModule`, the base every dataset specialises: loaders for training by iterations,
sharded evaluation and prediction.

Sampling is done here rather than by Lightning (the trainer runs with `use_distributed_sampler=False`)
because mmseg's protocol needs two different rules (docs/reproduction.md#augmentation, docs/libraries.md):
- train: `DistributedSampler(shuffle=True, drop_last=True)`, like mmseg v0.x; Lightning calls `set_epoch`;
- val/test: every image exactly once across ranks (no padding with repeated images), since the metric
  sums confusion matrices over ranks and a repeated image would be counted twice.
`batch_size` is per device (docs/training.md): the global batch is world_size x batch_size.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from collections.abc import Iterator, Sequence, Sized
from pathlib import Path
from typing import Any, cast

import cv2
import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from bisenet_pl.data.limits import check_trainable
from bisenet_pl.data.samplers import ResumableLoader, ResumableSampler
from bisenet_pl.data.transforms import build_test_transform, build_train_transform
from bisenet_pl.errors import DatasetError

log = logging.getLogger(__name__)


def _len(dataset: Dataset) -> int:
    """`len` of a map-style dataset (ours all are; torch's `Dataset` type declares no `__len__`)."""
    return len(cast(Sized, dataset))


class RepeatDataset(Dataset):
    """`dataset` seen `times` times in a row, so a tiny set still fills one batch per device and epoch."""

    def __init__(self, dataset: Dataset, times: int) -> None:
        self.dataset = dataset
        self.times = int(times)

    def __len__(self) -> int:
        return _len(self.dataset) * self.times

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index % _len(self.dataset)]

    def reseed(self, seed: int | Sequence[int]) -> None:
        if hasattr(self.dataset, "reseed"):
            self.dataset.reseed(seed)


class ShardedSampler(Sampler[int]):
    """Rank r of W gets indices r, r + W, r + 2W, ...: every index exactly once across ranks, no padding."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.length, self.rank, self.world_size = int(length), int(rank), int(world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def worker_init(worker_id: int, rank: int = 0) -> None:
    """DataLoader worker setup: single-threaded OpenCV and a distinct augmentation stream per worker.

    OpenCV would otherwise start a thread pool in every worker (docs/libraries.md). albumentations 2.0.8 does
    not reseed its generators in workers: forked workers inherit the parent's state and would draw the
    same crops and flips. torch gives each worker `base_seed + worker_id`, with a new base seed every epoch
    (drawn from torch's RNG, so `seed_everything` makes runs reproducible); the base seed is shared across
    DDP ranks, hence the rank in the mix. Ctrl-C is the main process's to handle (it stops the run
    gracefully, `bisenet_pl.training.interrupts`), so workers ignore SIGINT instead of dying under it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(0)
    cv2.ocl.setUseOpenCL(False)
    info = torch.utils.data.get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed([info.seed % (1 << 63), rank])


#: `data.num_workers=auto` never starts more loader processes per device than this, whatever the core count.
MAX_AUTO_WORKERS = 16


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a SLURM or taskset allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def auto_workers(devices_per_node: int, cores: int | None = None) -> int:
    """Loader processes per device for `data.num_workers=auto`: the cores each device has, at most
    `MAX_AUTO_WORKERS`: no more workers than cores (PyTorch warns beyond that, and they only compete)."""
    cores = available_cores() if cores is None else int(cores)
    return max(1, min(cores // max(int(devices_per_node), 1), MAX_AUTO_WORKERS))


class DataWaitClock:
    """Seconds the training loop spent waiting in `next()` on the train loader (this process), read by
    `SpeedMonitor` to log the data wait share of each step (`train/data_wait_share`)."""

    def __init__(self) -> None:
        self.total = 0.0


class _TimedIterator(Iterator[Any]):
    def __init__(self, inner: Iterator[Any], clock: DataWaitClock) -> None:
        self.inner, self.clock = inner, clock

    def __iter__(self) -> _TimedIterator:
        return self

    def __next__(self) -> Any:
        start = time.perf_counter()
        try:
            return next(self.inner)
        finally:
            self.clock.total += time.perf_counter() - start

    def __len__(self) -> int:
        return len(cast(Sized, self.inner))


class TimedResumableLoader(ResumableLoader):
    """The training loader, whose iterators add the time spent waiting for each batch to `data_wait`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_wait = DataWaitClock()

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return _TimedIterator(super().__iter__(), self.data_wait)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _number(value: Any, name: str, kind: type = int) -> Any:
    """`kind(value)`, or one message naming the config key (`data.batch_size=abc`)."""
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise DatasetError(f"data.{name} must be {what}, got {value!r}") from None


def _pair(value: Sequence[Any], name: str, kind: type = int) -> tuple[Any, Any]:
    if isinstance(value, str | int | float) or value is None:
        raise DatasetError(f"data.{name} must have two values, e.g. [1024, 1024], got {value!r}")
    values = tuple(_number(v, name, kind) for v in value)
    if len(values) != 2:
        raise DatasetError(f"data.{name} must have two values, got {list(value)}")
    return values


class SegmentationDataModule(L.LightningDataModule):
    """What every segmentation dataset shares: mmseg's augmentation recipe with its sizes, the per-device
    batch, loader processes, the train sampler that resumes mid-epoch and the sharded evaluation samplers.

    A dataset specialises it with its files and its class table: `make_dataset` (one split from disk),
    `first_file_check` (a cheap check before the model is built) and the class metadata
    (`class_names`, `palette`, `ignore_index`, `has_label_ids`). `CityscapesDataModule` and
    `FolderDataModule` are the two in the package.

    `crop_size` is (h, w); `scale` and `test_scale` are mmseg's (long, short) boxes
    (docs/reproduction.md#augmentation).
    """

    #: Channel order the dataset's `__getitem__` yields (the pipeline gives the same pixels either way).
    input_order = "bgr"

    def __init__(
        self,
        root: str | Path,
        batch_size: int = 4,
        num_workers: int | str | None = "auto",
        crop_size: Sequence[int] = (1024, 1024),
        scale: Sequence[int] = (2048, 1024),
        ratio_range: Sequence[float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        test_scale: Sequence[int] = (2048, 1024),
        keep_original: bool = False,
        photometric: bool = True,
        flip_prob: float = 0.5,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        seed: int = 0,
        val_split: str = "val",
        test_split: str = "val",
        predict_split: str = "test",
    ) -> None:
        super().__init__()
        self.root = Path(str(root)).expanduser()
        self.batch_size = _number(batch_size, "batch_size")
        # None / "auto": one loader process per core of each device (`auto_workers`), chosen when the
        # loaders are built (the device count is the trainer's) and stated in the log.
        auto = num_workers is None or (isinstance(num_workers, str) and num_workers.strip().lower() == "auto")
        self.num_workers: int | None = None if auto else _number(num_workers, "num_workers")
        if self.batch_size < 1 or (self.num_workers is not None and self.num_workers < 0):
            raise DatasetError(
                f"need batch_size >= 1 and num_workers >= 0 (or auto), got {batch_size}, {num_workers}"
            )
        self._workers_said = False
        self.crop_size = _pair(crop_size, "crop_size")
        self.scale = _pair(scale, "scale")
        self.ratio_range = _pair(ratio_range, "ratio_range", float)
        self.cat_max_ratio = _number(cat_max_ratio, "cat_max_ratio", float)
        self.test_scale = _pair(test_scale, "test_scale")
        # val/test items also carry the original uint8 image, which ms+flip resizes once per ratio
        self.keep_original = bool(keep_original)
        self.photometric = bool(photometric)
        self.flip_prob = _number(flip_prob, "flip_prob", float)
        self.pin_memory = pin_memory
        self.persistent_workers = bool(persistent_workers)
        self.seed = _number(seed, "seed")
        self.val_split, self.test_split, self.predict_split = val_split, test_split, predict_split
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self.predict_dataset: Dataset | None = None

    # ---- what a dataset specialises ----------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def palette(self) -> list[list[int]]:
        raise NotImplementedError

    @property
    def ignore_index(self) -> int:
        return 255

    @property
    def has_label_ids(self) -> bool:
        """Whether predictions convert to the dataset's own label ids (Cityscapes' labelIds)."""
        return False

    def make_dataset(self, split: str, transform: Any, keep_original: bool, with_labels: bool) -> Dataset:
        """One split's dataset: the only place where the layout on disk matters."""
        raise NotImplementedError

    def first_file_check(self, split: str = "train") -> None:
        """Cheap checks before the model is built, so that a wrong path fails in a second."""
        raise NotImplementedError

    # ---- splits ---------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_dataset is None:
            check_trainable(self.batch_size, self.crop_size)  # batch 1 per device: refused here, not in BN
            train = self.make_dataset("train", self._train_transform(), False, True)
            self.train_dataset = self._at_least_one_batch(train)
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            self.val_dataset = self.make_dataset(
                self.val_split, self._test_transform(), self.keep_original, True
            )
        if stage in (None, "test") and self.test_dataset is None:
            self.test_dataset = self.make_dataset(
                self.test_split, self._test_transform(), self.keep_original, True
            )
        if stage in (None, "predict") and self.predict_dataset is None:
            self.predict_dataset = self.make_dataset(self.predict_split, self._test_transform(), False, False)

    def _train_transform(self) -> Any:
        rank, _ = _dist_info()
        return build_train_transform(
            scale=self.scale,
            ratio_range=self.ratio_range,
            crop_size=self.crop_size,
            cat_max_ratio=self.cat_max_ratio,
            flip_prob=self.flip_prob,
            photometric=self.photometric,
            seed=[self.seed, rank],  # main-process stream (num_workers=0); workers reseed in worker_init
            input_order=self.input_order,
        )

    def _test_transform(self) -> Any:
        return build_test_transform(scale=self.test_scale, input_order=self.input_order)

    def _at_least_one_batch(self, dataset: Dataset) -> Dataset:
        _, world = _dist_info()
        needed = self.batch_size * world
        if _len(dataset) >= needed:
            return dataset
        times = -(-needed // _len(dataset))
        log.info(
            "Train split has %d images, fewer than one batch per device (%d x %d): repeating it %d times "
            "per epoch.",
            _len(dataset),
            world,
            self.batch_size,
            times,
        )
        return RepeatDataset(dataset, times)

    # ---- loaders ------------------------------------------------------------------------------------
    def _pin(self) -> bool:
        if self.pin_memory is not None:
            return bool(self.pin_memory)
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.strategy.root_device.type == "cuda"
        return torch.cuda.is_available()

    def workers(self) -> int:
        """Loader processes per device: `num_workers`, or for `auto` the cores per device on this node
        (at most `MAX_AUTO_WORKERS`); the choice is logged once."""
        if self.num_workers is not None:
            return self.num_workers
        trainer = getattr(self, "trainer", None)
        devices = int(getattr(trainer, "num_devices", 1) or 1) if trainer is not None else 1
        cores = available_cores()
        workers = auto_workers(devices, cores)
        if not self._workers_said:
            self._workers_said = True
            log.info(
                "data.num_workers=auto: %d loader processes per device (%d CPU cores for %d device%s on this "
                "node, at most %d); set data.num_workers to choose",
                workers,
                cores,
                devices,
                "" if devices == 1 else "s",
                MAX_AUTO_WORKERS,
            )
        return workers

    def _loader(
        self,
        dataset: Dataset,
        batch_size: int,
        sampler: Sampler | None,
        loader: type[DataLoader] = DataLoader,
        **kw: Any,
    ) -> DataLoader:
        rank, _ = _dist_info()
        workers = self.workers()
        return loader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self._pin(),
            persistent_workers=self.persistent_workers and workers > 0,
            worker_init_fn=functools.partial(worker_init, rank=rank),
            **kw,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled per epoch with `seed + epoch` on every rank count, and resumable mid-epoch
        (`bisenet_pl.data.samplers`)."""
        if self.train_dataset is None:
            self.setup("fit")
        assert self.train_dataset is not None
        rank, world = _dist_info()
        sampler = ResumableSampler(self.train_dataset, world, rank, seed=self.seed)
        return self._loader(
            self.train_dataset,
            self.batch_size,
            sampler,
            loader=TimedResumableLoader,
            drop_last=True,
            batches_done=self._batches_trained,
        )

    def _batches_trained(self) -> int:
        trainer = self.trainer
        if trainer is None:
            return 0
        return int(trainer.global_step) * int(trainer.accumulate_grad_batches)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        rank, world = _dist_info()
        sampler = ShardedSampler(_len(dataset), rank, world) if world > 1 else None
        return self._loader(dataset, 1, sampler, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        if self.val_dataset is None:
            self.setup("validate")
        assert self.val_dataset is not None
        return self._eval_loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader:
        if self.test_dataset is None:
            self.setup("test")
        assert self.test_dataset is not None
        return self._eval_loader(self.test_dataset)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_dataset is None:
            self.setup("predict")
        assert self.predict_dataset is not None
        return self._eval_loader(self.predict_dataset)
