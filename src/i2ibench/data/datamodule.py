"""I2IDataModule: the one datamodule every method trains and is evaluated through."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset

from i2ibench.data import catalog
from i2ibench.data.folders import (
    EvalImages, Layout, RealImages, UnalignedDataset, UnalignedSampler, detect_layout, paired_names, split_images,
)
from i2ibench.data.images import DataError, check_images, load_rgb, raise_for_bad
from i2ibench.data.tasks import parse_task, two_domain_tasks
from i2ibench.data.transforms import EvalTransform, TrainTransform

log = logging.getLogger(__name__)


def default_num_workers() -> int:
    """Leave one core to the training process; a couple of workers keep small images flowing."""
    return min(4, max(0, (os.cpu_count() or 1) - 1))


class I2IDataModule(pl.LightningDataModule):
    """Loads a dataset in any of the suite's layouts (see `data.folders`) for training and evaluation.

    Args:
        dataset: a catalog name (`builtin`, `sketch-photo`, ...) or a folder path.
        load_size: training images are resized to load_size x load_size (CycleGAN: 286) ...
        crop_size: ... then randomly cropped to crop_size (CycleGAN: 256); evaluation resizes to it.
        flip: random horizontal flips in training (CycleGAN: on).
        preprocess: `resize_and_crop` (reference default), `crop` (no resize) or `resize`.
        batch_size: training batch size (CycleGAN: 1).
        eval_batch_size: batch size for translation and feature extraction in evaluation.
        num_workers: dataloader workers; None picks one fewer than the CPU count (at most 4).
        seed: seeds the training sampler (which pairs, crops and flips, per epoch).
    """

    def __init__(self, dataset: str = "builtin", load_size: int = 286, crop_size: int = 256, flip: bool = True,
                 preprocess: str = "resize_and_crop", batch_size: int = 1, eval_batch_size: int = 16,
                 num_workers: int | None = None, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dataset = dataset
        self.train_transform = TrainTransform(load_size, crop_size, flip, preprocess)
        self.eval_transform = EvalTransform(crop_size)
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.layout: Layout | None = None
        self.images: dict[str, dict[str, list[Path]]] = {}

    # -- set-up --------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        catalog.resolve(self.dataset)  # generates built-in sets once, on one process per node

    def setup(self, stage: str | None = None) -> None:
        """Find the layout and check every image the stage will read, before any training."""
        if self.layout is None:
            self.layout = detect_layout(catalog.resolve(self.dataset, fetch=False))
        splits = {"fit": ("train", "val", "test"), "validate": ("val", "test")}.get(stage or "fit", ("test",))
        if stage in ("fit", None) and not self.layout.has_split("train"):
            raise DataError(f"{self.layout.root}: no train split; training needs "
                            f"{' and '.join(str(self.layout.folder('train', d).name) for d in self.layout.domains)}.")
        checked, bad = {}, {}
        for split in splits:
            if split in self.images or not self.layout.has_split(split):
                continue
            checked[split] = split_images(self.layout, split)
            min_size = self.train_transform.min_image_size if split == "train" else None
            for domain, paths in checked[split].items():
                folder = self.layout.folder(split, domain)
                check = check_images(paths, min_size, desc=f"checking {folder}")
                bad.update(check.bad)
                if report := check.report_conversions(str(folder)):
                    _warn_once(report)
        raise_for_bad(bad)  # every bad file of every folder in one message
        self.images.update(checked)
        if stage == "test" and "test" not in self.images:
            raise DataError(f"{self.layout.root}: no test split (testA/ testB/ or test/<domain>/).")

    @property
    def domains(self) -> tuple[str, ...]:
        assert self.layout is not None, "call setup() first"
        return self.layout.domains

    @property
    def eval_split(self) -> str:
        """The split evaluated during training: val when it exists, else test (tracked, never selected on)."""
        return "val" if "val" in self.images else "test"

    def is_paired(self, split: str) -> bool:
        images = self.images[split]
        return len(self.domains) == 2 and paired_names(images[self.domains[0]], images[self.domains[1]])

    # -- training ------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        paths_a, paths_b = (self.images["train"][d] for d in self.domains)
        dataset = UnalignedDataset(paths_a, paths_b, self.train_transform)
        sampler = UnalignedSampler(len(paths_a), len(paths_b), seed=self.seed)
        return self._loader(dataset, self.batch_size, sampler=sampler)

    # -- evaluation ----------------------------------------------------------------------------
    def eval_tasks(self) -> list[str]:
        """The tasks of the attached method (its `eval_tasks(domains)`), else the two-domain ones."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        return module.eval_tasks(self.domains) if module is not None else two_domain_tasks()

    def eval_dataset(self, split: str, task: str) -> EvalImages:
        spec = parse_task(task)
        images = self.images[split]
        gt = None
        if self.is_paired(split):
            by_stem = {p.stem: p for p in images[spec.target]}
            gt = [by_stem[p.stem] for p in images[spec.source]]
        return EvalImages(images[spec.source], spec.source, task, self.eval_transform, gt, spec.target if gt else None)

    def eval_dataloaders(self, split: str) -> list[DataLoader]:
        """One loader per task, in `eval_tasks()` order, each sharded without padding under DDP."""
        return [self._eval_loader(self.eval_dataset(split, task)) for task in self.eval_tasks()]

    def real_dataloader(self, split: str, domain: str) -> DataLoader:
        """Real images of one domain (the reference set of distribution metrics)."""
        return self._eval_loader(RealImages(self.images[split][domain], self.eval_transform))

    def val_dataloader(self) -> list[DataLoader]:
        return self.eval_dataloaders(self.eval_split)

    def test_dataloader(self) -> list[DataLoader]:
        return self.eval_dataloaders("test")

    def predict_dataloader(self) -> list[DataLoader]:
        return self.eval_dataloaders("test")

    def sample_batch(self, count: int = 4) -> dict[str, torch.Tensor]:
        """The first `count` evaluation images of each domain: fixed inputs for sample grids."""
        split = self.eval_split
        return {domain: torch.stack([self.eval_transform.image(load_rgb(p)) for p in self.images[split][domain][:count]])
                for domain in self.domains}

    # -- loaders -------------------------------------------------------------------------------
    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        trainer = self.trainer
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            # No padding: under DDP every image is evaluated exactly once (Lightning's default pads).
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size,
                                                   rank=trainer.global_rank, shuffle=False)
        return self._loader(dataset, self.eval_batch_size, sampler=sampler)

    def _loader(self, dataset: Dataset, batch_size: int, sampler=None) -> DataLoader:
        workers = self.num_workers
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


@rank_zero_only
def _warn_once(message: str) -> None:
    log.warning(message)
