"""Image-folder layouts and the datasets that read them.

Layouts (`detect_layout`):
- two-domain, the CycleGAN convention: `trainA/ trainB/ testA/ testB/`, optional `valA/ valB/`;
- mask: the same plus `trainA_seg/ trainB_seg/ ...` holding instance masks (InstaGAN layout);
- multi-domain: `train/<domain>/ val/<domain>/ test/<domain>/` (StarGAN v2 layout).

Training randomness (which B image goes with which A, crops, flips) comes from the sampler as a
pure function of (seed, epoch): the data stream is then the same whatever the number of workers
or processes, and a resumed run sees exactly what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
from torch.utils.data import Dataset, Sampler

from i2ibench.data.images import DataError, list_images, load_rgb
from i2ibench.data.transforms import EvalTransform, TrainTransform

SPLITS = ("train", "val", "test")
TWO_DOMAINS = ("A", "B")


@dataclass(frozen=True)
class Layout:
    """Where the images of each split and domain live."""

    kind: str  # "two-domain" or "multi-domain"
    root: Path
    domains: tuple[str, ...]
    has_masks: bool = False

    def folder(self, split: str, domain: str) -> Path:
        if self.kind == "two-domain":
            return self.root / f"{split}{domain}"
        return self.root / split / domain

    def mask_folder(self, split: str, domain: str) -> Path:
        return self.root / f"{split}{domain}_seg"

    def has_split(self, split: str) -> bool:
        return any(self.folder(split, d).is_dir() for d in self.domains)


LAYOUT_HELP = (
    "expected one of these layouts:\n"
    "  two-domain:   trainA/ trainB/ testA/ testB/ (optional valA/ valB/)\n"
    "  mask:         the two-domain folders plus trainA_seg/ trainB_seg/ testA_seg/ testB_seg/\n"
    "  multi-domain: train/<domain>/ test/<domain>/ (optional val/<domain>/), two or more domains\n"
    "  side-by-side: train/*.jpg test/*.jpg (optional val/), A left | B right in one file (Pix2Pix datasets)"
)


def detect_layout(root: Path) -> Layout:
    """Recognise the layout of a dataset folder, or say which layouts are expected."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found.\n{LAYOUT_HELP}")
    if (root / "trainA").is_dir() or (root / "trainB").is_dir():
        missing = [name for name in ("trainA", "trainB") if not (root / name).is_dir()]
        if missing:
            raise DataError(f"{root}: domain folder {missing[0]}/ is missing; a two-domain dataset needs "
                            "both trainA/ and trainB/.")
        has_masks = (root / "trainA_seg").is_dir() and (root / "trainB_seg").is_dir()
        return Layout("two-domain", root, TWO_DOMAINS, has_masks)
    if (root / "train").is_dir():
        domains = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith(".")))
        if len(domains) < 2:
            raise DataError(f"{root / 'train'}: a multi-domain dataset needs two or more domain folders, "
                            f"found {list(domains)}.")
        return Layout("multi-domain", root, domains)
    raise DataError(f"{root}: not a dataset folder in a known layout.\n{LAYOUT_HELP}")


def paired_names(paths_a: list[Path], paths_b: list[Path]) -> bool:
    """A split is paired when both domains hold the same file stems (e.g. 0001.png <-> 0001.jpg)."""
    return sorted(p.stem for p in paths_a) == sorted(p.stem for p in paths_b)


class UnalignedDraw(NamedTuple):
    """One training sample: an A index, an independently drawn B index, and a seed for its augmentation."""

    index_a: int
    index_b: int
    seed: int


class UnalignedSampler(Sampler[UnalignedDraw]):
    """Unaligned sampling as the CycleGAN reference does it, but seeded per epoch.

    An epoch has max(|A|, |B|) samples (or `length`, for methods that count iterations: MUNIT); A is
    visited in a random order (index mod |A|), and each A image gets a B image drawn uniformly at
    random (`UnalignedDataset` in the reference).
    """

    def __init__(self, size_a: int, size_b: int, seed: int = 0, shuffle: bool = True,
                 length: int | None = None) -> None:
        self.size_a, self.size_b, self.seed, self.shuffle, self.length = size_a, size_b, seed, shuffle, length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length or max(self.size_a, self.size_b)

    def __iter__(self) -> Iterator[UnalignedDraw]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        length = len(self)
        if self.length is None:
            order = torch.randperm(length, generator=generator) if self.shuffle else torch.arange(length)
        else:  # successive random orders of A, so that any length visits A evenly (a prefix of one order if shorter)
            rounds = -(-length // self.size_a)
            order = torch.cat([torch.randperm(self.size_a, generator=generator) if self.shuffle
                               else torch.arange(self.size_a) for _ in range(rounds)])[:length]
        index_b = torch.randint(0, self.size_b, (length,), generator=generator)
        seeds = torch.randint(0, 2**62, (length,), generator=generator)
        for k in range(length):
            yield UnalignedDraw(int(order[k]) % self.size_a, int(index_b[k]), int(seeds[k]))


class UnalignedDataset(Dataset):
    """Training pairs of an A image and an unrelated B image, each augmented independently."""

    load = staticmethod(load_rgb)  # the datamodule may put a DecodedImageCache here

    def __init__(self, paths_a: list[Path], paths_b: list[Path], transform: TrainTransform) -> None:
        self.paths_a, self.paths_b, self.transform = paths_a, paths_b, transform

    def __len__(self) -> int:
        return max(len(self.paths_a), len(self.paths_b))

    def __getitem__(self, draw: UnalignedDraw) -> dict:
        generator = torch.Generator().manual_seed(draw.seed)
        item = {}
        for domain, path in (("A", self.paths_a[draw.index_a]), ("B", self.paths_b[draw.index_b])):
            image = self.load(path)
            item[domain] = self.transform.image(image, self.transform.sample(image.size, generator))
            item[f"{domain}_path"] = str(path)
        return item


def check_ground_truth(sources: list[Path], gt_paths: list[Path] | None, task: str) -> None:
    """Ground truth, when given, must name the same stems in the same order as the sources it belongs to."""
    if gt_paths is not None and [p.stem for p in gt_paths] != [p.stem for p in sources]:
        raise DataError(f"ground truth for {task} does not match its sources by name")


class EvalImages(Dataset):
    """Source images of one evaluation task, in file order, with the ground truth when paired.

    Items: {`<domain>`: image, `<domain>_path`, `task`, `index`} plus `<target>_gt` for paired splits.
    """

    def __init__(self, paths: list[Path], domain: str, task: str, transform: EvalTransform,
                 gt_paths: list[Path] | None = None, gt_domain: str | None = None) -> None:
        check_ground_truth(paths, gt_paths, task)
        self.paths, self.domain, self.task, self.transform = paths, domain, task, transform
        self.gt_paths, self.gt_domain = gt_paths, gt_domain

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        item = {self.domain: self.transform.image(load_rgb(path)), f"{self.domain}_path": str(path),
                "task": self.task, "index": index}
        if self.gt_paths is not None:
            item[f"{self.gt_domain}_gt"] = self.transform.image(load_rgb(self.gt_paths[index]))
        return item


class RealImages(Dataset):
    """Real images of one domain for distribution metrics: {`image`, `path`, `index`}."""

    def __init__(self, paths: list[Path], transform: EvalTransform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.transform.image(load_rgb(self.paths[index])), "path": str(self.paths[index]),
                "index": index}


def split_images(layout: Layout, split: str) -> dict[str, list[Path]]:
    """The image files of every domain of one split (errors for a missing or empty domain)."""
    return {domain: list_images(layout.folder(split, domain)) for domain in layout.domains}


# -- multi-domain (StarGAN v2) --------------------------------------------------------------------
class TripletDraw(NamedTuple):
    """A source image, a reference image and a second reference of the reference's domain, and a seed."""

    source: int
    reference: int
    reference2: int
    seed: int


class BalancedTripletSampler(Sampler[TripletDraw]):
    """Class-balanced sampling with replacement, as StarGAN v2's source and reference loaders.

    Sources and references are each drawn with weight 1 / |domain| (the reference's
    `_make_balanced_sampler`); the second reference is another image of the reference's domain.
    An epoch has `samples_per_epoch` draws (the reference iterates without epochs), seeded per epoch.
    """

    def __init__(self, domains: list[int], samples_per_epoch: int, seed: int = 0) -> None:
        self.domains = torch.tensor(domains)
        counts = torch.bincount(self.domains)
        self.weights = 1.0 / counts[self.domains].double()
        self.members = [torch.nonzero(self.domains == d).flatten() for d in range(len(counts))]
        self.samples_per_epoch, self.seed, self.epoch = samples_per_epoch, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __iter__(self) -> Iterator[TripletDraw]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = self.samples_per_epoch
        sources = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        references = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        picks = torch.rand(n, generator=generator, dtype=torch.float64)
        seeds = torch.randint(0, 2**62, (n,), generator=generator)
        for k in range(n):
            members = self.members[int(self.domains[references[k]])]
            partner = members[min(int(picks[k] * len(members)), len(members) - 1)]
            yield TripletDraw(int(sources[k]), int(references[k]), int(partner), int(seeds[k]))


class MultiDomainTrainSet(Dataset):
    """StarGAN v2 training items: {x, y, x_ref, x_ref2, y_ref, z, z2} (images augmented independently)."""

    load = staticmethod(load_rgb)  # the datamodule may put a DecodedImageCache here

    def __init__(self, paths: list[Path], domains: list[int], transform, latent_dim: int) -> None:
        self.paths, self.domains, self.transform, self.latent_dim = paths, domains, transform, latent_dim

    def __len__(self) -> int:
        return len(self.paths)

    def _image(self, index: int, generator: torch.Generator) -> torch.Tensor:
        image = self.load(self.paths[index])
        return self.transform.image(image, self.transform.sample(image.size, generator))

    def __getitem__(self, draw: TripletDraw) -> dict:
        generator = torch.Generator().manual_seed(draw.seed)
        return {"x": self._image(draw.source, generator), "y": self.domains[draw.source],
                "x_ref": self._image(draw.reference, generator), "x_ref2": self._image(draw.reference2, generator),
                "y_ref": self.domains[draw.reference], "x_path": str(self.paths[draw.source]),
                "z": torch.randn(self.latent_dim, generator=generator),
                "z2": torch.randn(self.latent_dim, generator=generator)}


def item_seed(*parts: object) -> int:
    """A stable seed from names and numbers (not Python's hash(), which changes between processes)."""
    import zlib

    return zlib.crc32("|".join(map(str, parts)).encode())


class MultiDomainEvalSet(Dataset):
    """Sources of one `src->trg@mode` task, each with K styles: K latents or K reference images.

    Styles are seeded by (task, source index, k): the same whatever the batch size or sharding.
    Items: {x, x_path, task, index, y_src, y_trg} plus `z` (K x latent_dim) or `x_ref` (K x 3 x H x W),
    and `gt` (the target image of the same name) when the split is paired. A `src->trg` task (label
    mode, K = 1) gets a single latent that label-conditioned methods ignore.
    """

    def __init__(self, sources: list[Path], task: str, y_src: int, y_trg: int, transform: EvalTransform,
                 outputs: int, latent_dim: int, references: list[Path] | None = None, seed: int = 0,
                 gt_paths: list[Path] | None = None) -> None:
        check_ground_truth(sources, gt_paths, task)
        self.sources, self.task, self.transform, self.outputs = sources, task, transform, outputs
        self.y_src, self.y_trg, self.latent_dim, self.references, self.seed = y_src, y_trg, latent_dim, references, seed
        self.gt_paths = gt_paths

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(item_seed(self.seed, self.task, index))
        item = {"x": self.transform.image(load_rgb(self.sources[index])), "x_path": str(self.sources[index]),
                "task": self.task, "index": index, "y_src": self.y_src, "y_trg": self.y_trg}
        if self.references is None:
            item["z"] = torch.randn(self.outputs, self.latent_dim, generator=generator)
        else:
            picks = torch.randint(0, len(self.references), (self.outputs,), generator=generator)
            item["x_ref"] = torch.stack([self.transform.image(load_rgb(self.references[int(k)])) for k in picks])
        if self.gt_paths is not None:
            item["gt"] = self.transform.image(load_rgb(self.gt_paths[index]))
        return item
