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
    BalancedTripletSampler, EvalImages, Layout, MultiDomainEvalSet, MultiDomainTrainSet, RealImages, UnalignedDataset,
    UnalignedSampler, detect_layout, paired_names, split_images,
)
from i2ibench.data.images import DataError, DecodedImageCache, check_images, load_rgb, raise_for_bad
from i2ibench.data.resumable import ResumableDataLoader
from i2ibench.data.masks import ORDERS, MaskedEvalImages, MaskedUnalignedDataset, scan_masks
from i2ibench.data.masks import report as report_masks
from i2ibench.data.paired import AlignedDataset, AlignedSampler, as_two_domain, pair_by_stem, pair_size_problems
from i2ibench.data.tasks import parse_task, two_domain_tasks
from i2ibench.data.transforms import EvalTransform, StarGANTrainTransform, TrainTransform
from i2ibench.errors import ConfigError

log = logging.getLogger(__name__)
MODES = ("auto", "unaligned", "paired", "multi-domain", "mask")


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
        mode: `unaligned` (two-domain pairs, CycleGAN family), `paired` (aligned pairs matched by file
            name, the same crop and flip for both images: Pix2Pix; see `data.paired`; side-by-side A|B
            files are split once into the cache), `multi-domain` (StarGAN v2 batches; a two-domain
            folder counts as domains A and B), `mask` (two-domain pairs with instance masks, see
            `data.masks`) or `auto` (multi-domain for a multi-domain layout, else unaligned).
        latent_dim: multi-domain: size of the latents `z`, `z2` drawn for each training item.
        outputs_per_source: multi-domain evaluation: styles (latents or references) per source.
        samples_per_epoch: multi-domain and unaligned two-domain: draws per epoch (multi-domain sampling
            is with replacement; unaligned visits A in a random order, cycling); None: the number of
            training images (unaligned: max(|A|, |B|)). Refused in paired mode, whose epochs are the pairs.
        max_instances, max_instances_eval: mask mode: instance slots per image in training (InstaGAN: 4)
            and in evaluation (20).
        mask_order: mask mode: `decreasing` area (the reference's default) or `random` order in training.
        cache_mb: decoded training images kept in memory per process (each worker has its own), so
            small datasets are decoded once; 0 turns the cache off.
    """

    def __init__(self, dataset: str = "builtin", load_size: int = 286, crop_size: int = 256, flip: bool = True,
                 preprocess: str = "resize_and_crop", batch_size: int = 1, eval_batch_size: int = 16,
                 num_workers: int | None = None, seed: int = 0, mode: str = "auto", latent_dim: int = 16,
                 outputs_per_source: int = 10, samples_per_epoch: int | None = None, max_instances: int = 4,
                 max_instances_eval: int = 20, mask_order: str = "decreasing", cache_mb: int = 512) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_options(self.hparams)
        self.dataset, self.requested_mode = dataset, mode
        self.train_transform = TrainTransform(load_size, crop_size, flip, preprocess)
        self.eval_transform = EvalTransform(crop_size)
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.latent_dim, self.outputs_per_source, self.samples_per_epoch = latent_dim, outputs_per_source, samples_per_epoch
        self.max_instances, self.max_instances_eval, self.mask_order = max_instances, max_instances_eval, mask_order
        self.cache_mb = cache_mb
        self.layout: Layout | None = None
        self.images: dict[str, dict[str, list[Path]]] = {}
        self.masks: dict[Path, list[Path]] = {}  # mask mode: each image's mask files, largest first

    # -- set-up --------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        # Generates built-in sets and splits side-by-side A|B files once, on one process per node.
        as_two_domain(catalog.resolve(self.dataset))

    def setup(self, stage: str | None = None) -> None:
        """Find the layout and check every image the stage will read, before any training."""
        if self.layout is None:
            self.layout = detect_layout(as_two_domain(catalog.resolve(self.dataset, fetch=False)))
            if self.mode == "multi-domain":
                self.train_transform = StarGANTrainTransform(self.eval_transform.crop_size)
        splits = {"fit": ("train", "val", "test"), "validate": ("val", "test")}.get(stage or "fit", ("test",))
        if stage in ("fit", None) and not self.layout.has_split("train"):
            raise DataError(f"{self.layout.root}: no train split; training needs "
                            f"{' and '.join(str(self.layout.folder('train', d).name) for d in self.layout.domains)}.")
        checked, bad, sizes = {}, {}, {}
        for split in splits:
            if split in self.images or not self.layout.has_split(split):
                continue
            checked[split] = split_images(self.layout, split)
            min_size = self.train_transform.min_image_size if split == "train" else None
            for domain, paths in checked[split].items():
                folder = self.layout.folder(split, domain)
                check = check_images(paths, min_size, desc=f"checking {folder}")
                bad.update(check.bad)
                sizes.update(check.sizes)
                if report := check.report_conversions(str(folder)):
                    _warn_once(report)
                if self.mode == "mask":  # the masks of every decodable image, so one error lists all bad files
                    slots = self.max_instances if split == "train" else self.max_instances_eval
                    readable = [p for p in paths if p in check.sizes]
                    masks = scan_masks(readable, self.layout.mask_folder(split, domain), check.sizes, slots)
                    bad.update(masks.bad)
                    self.masks.update(masks.masks)
                    if note := report_masks(masks, self.layout.mask_folder(split, domain)):
                        _warn_once(note)
        if self.mode == "paired" and "train" in checked:
            if len(self.layout.domains) != 2:
                raise DataError(f"{self.layout.root}: paired training needs two domains (trainA/ trainB/, or "
                                f"side-by-side train/*.jpg), found {list(self.layout.domains)}.")
            checked["train"] = dict(zip(self.layout.domains, pair_by_stem(*checked["train"].values())))
            bad.update(pair_size_problems(*checked["train"].values(), sizes))
        raise_for_bad(bad)  # every bad file of every folder in one message
        self.images.update(checked)
        if "train" in checked and self.mode == "multi-domain":
            self._multi_domain_epoch()
        if stage == "test" and "test" not in self.images:
            raise DataError(f"{self.layout.root}: no test split (testA/ testB/ or test/<domain>/).")

    @property
    def mode(self) -> str:
        if self.requested_mode == "mask" and self.layout is not None and not self.layout.has_masks:
            missing = [f"train{d}_seg/" for d in self.layout.domains if not (self.layout.root / f"train{d}_seg").is_dir()]
            raise DataError(f"{self.layout.root}: mask mode needs instance masks beside the images "
                            f"(trainA_seg/ trainB_seg/ testA_seg/ testB_seg/); missing: {', '.join(missing) or 'all'}.")
        if self.requested_mode != "auto":
            return self.requested_mode  # `paired` is never automatic: unpaired methods train unaligned on pairs too
        return "multi-domain" if self.layout is not None and self.layout.kind == "multi-domain" else "unaligned"

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
        if self.mode == "multi-domain":
            return self._multi_domain_train_loader()
        if len(self.domains) != 2:
            raise DataError(f"{self.layout.root}: unaligned two-domain training needs 2 domains, found "
                            f"{list(self.domains)}; multi-domain methods use `data.mode: multi-domain`.")
        paths_a, paths_b = (self.images["train"][d] for d in self.domains)
        if self.mode == "paired":  # aligned by setup(): paths_b[i] is the counterpart of paths_a[i]
            if self.samples_per_epoch:
                raise ConfigError("data.samples_per_epoch is not used in paired mode (an epoch is every pair "
                                  "once, as Pix2Pix and BicycleGAN count): remove it")
            dataset = AlignedDataset(paths_a, paths_b, self.train_transform)
            sampler = AlignedSampler(len(paths_a), seed=self.seed)
            return self._loader(self._cached(dataset), self.batch_size, sampler=sampler, loader_class=ResumableDataLoader)
        if self.mode == "mask":
            dataset = MaskedUnalignedDataset({"A": paths_a, "B": paths_b}, self.masks, self.train_transform,
                                             self.max_instances, self.mask_order)
        else:
            dataset = UnalignedDataset(paths_a, paths_b, self.train_transform)
        sampler = UnalignedSampler(len(paths_a), len(paths_b), seed=self.seed, length=self.samples_per_epoch)
        return self._loader(self._cached(dataset), self.batch_size, sampler=sampler, loader_class=ResumableDataLoader)

    def _cached(self, dataset: Dataset) -> Dataset:
        if self.cache_mb > 0:
            dataset.load = DecodedImageCache(self.cache_mb)
        return dataset

    def _multi_domain_epoch(self) -> int:
        """Draws per multi-domain epoch; an epoch smaller than one batch is an error (drop_last would train nothing)."""
        per_epoch = self.samples_per_epoch or sum(len(p) for p in self.images["train"].values())
        if per_epoch < self.batch_size:
            source = "data.samples_per_epoch" if self.samples_per_epoch else "the number of training images"
            raise ConfigError(f"data.batch_size ({self.batch_size}) is larger than the samples per epoch "
                              f"({per_epoch}, {source}), so an epoch would hold no batch; lower --data.batch_size "
                              "or raise --data.samples_per_epoch")
        return per_epoch

    def _multi_domain_train_loader(self) -> DataLoader:
        paths, domains = [], []
        for index, domain in enumerate(self.domains):
            paths += self.images["train"][domain]
            domains += [index] * len(self.images["train"][domain])
        sampler = BalancedTripletSampler(domains, self._multi_domain_epoch(), seed=self.seed)
        dataset = MultiDomainTrainSet(paths, domains, self.train_transform, self.latent_dim)
        return self._loader(self._cached(dataset), self.batch_size, sampler=sampler, drop_last=True,
                            loader_class=ResumableDataLoader)

    # -- evaluation ----------------------------------------------------------------------------
    def eval_tasks(self) -> list[str]:
        """The tasks of the attached method (its `eval_tasks(domains)`), else the two-domain ones."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        return module.eval_tasks(self.domains) if module is not None else two_domain_tasks()

    def eval_dataset(self, split: str, task: str) -> Dataset:
        spec = parse_task(task)
        images = self.images[split]
        gt = None
        if self.is_paired(split):  # the target of the same name: content metrics against the ground truth
            by_stem = {p.stem: p for p in images[spec.target]}
            gt = [by_stem[p.stem] for p in images[spec.source]]
        if spec.mode is not None:  # multi-domain: K styles per source (one for label-mode tasks)
            references = images[spec.target] if spec.mode == "reference" else None
            return MultiDomainEvalSet(images[spec.source], task, self.domains.index(spec.source),
                                      self.domains.index(spec.target), self.eval_transform, self.styles_per_source(task),
                                      self.latent_dim, references, seed=self.seed, gt_paths=gt)
        if self.mode == "mask":
            return MaskedEvalImages(images[spec.source], spec.source, task, self.masks, self.eval_transform,
                                    self.max_instances_eval)
        return EvalImages(images[spec.source], spec.source, task, self.eval_transform, gt, spec.target if gt else None)

    def styles_per_source(self, task: str) -> int:
        """Outputs per source of `task`: K (`outputs_per_source`) for @latent / @reference tasks, else 1."""
        return self.outputs_per_source if parse_task(task).styled else 1

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
        """The first `count` evaluation images of each domain (and their masks): fixed inputs for sample grids."""
        split = self.eval_split
        batch = {domain: torch.stack([self.eval_transform.image(load_rgb(p)) for p in self.images[split][domain][:count]])
                 for domain in self.domains}
        if self.mode == "mask":
            for domain in self.domains:
                items = MaskedEvalImages(self.images[split][domain][:count], domain, "", self.masks,
                                         self.eval_transform, self.max_instances_eval)
                batch[f"{domain}_masks"] = torch.stack([items[i][f"{domain}_masks"] for i in range(len(items))])
        return batch

    # -- loaders -------------------------------------------------------------------------------
    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        trainer = self.trainer
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            # No padding: under DDP every image is evaluated exactly once (Lightning's default pads).
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size,
                                                   rank=trainer.global_rank, shuffle=False)
        return self._loader(dataset, self.eval_batch_size, sampler=sampler)

    def _loader(self, dataset: Dataset, batch_size: int, sampler=None, drop_last: bool = False,
                loader_class: type[DataLoader] = DataLoader) -> DataLoader:
        workers = self.num_workers
        return loader_class(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(), drop_last=drop_last)


# (option, smallest allowed value, example of a sensible value); None is allowed where the default is None.
_MINIMUMS = (("load_size", 1, 286), ("crop_size", 1, 256), ("batch_size", 1, 1), ("eval_batch_size", 1, 16),
             ("num_workers", 0, 2), ("latent_dim", 1, 16), ("outputs_per_source", 1, 10),
             ("samples_per_epoch", 1, 10000), ("max_instances", 1, 4), ("max_instances_eval", 1, 20),
             ("cache_mb", 0, 512))


def check_options(options) -> None:
    """Reject option values that cannot work, naming the option and the fix (a ConfigError, before any data is read)."""
    for name, minimum, example in _MINIMUMS:
        value = options[name]
        if value is None and name in ("num_workers", "samples_per_epoch"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            what = "a positive integer" if minimum == 1 else "an integer >= 0"
            raise ConfigError(f"data.{name} must be {what}, got {value!r}; set --data.{name} (e.g. {example})")
    for name, choices in (("mode", MODES), ("mask_order", ORDERS)):
        if options[name] not in choices:
            raise ConfigError(f"data.{name}: unknown value {options[name]!r}; use one of {', '.join(choices)}")
    if not str(options["dataset"]).strip():
        raise ConfigError("data.dataset is empty; set --data.dataset to a catalog name (`i2ibench data list`) or a folder")


@rank_zero_only
def _warn_once(message: str) -> None:
    log.warning(message)
