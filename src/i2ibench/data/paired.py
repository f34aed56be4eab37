"""Paired (aligned) training data: pairs matched by file stem, and the side-by-side `A|B` layout.

Paired methods (Pix2Pix) train on an image and its own counterpart: `trainA/0001.png` with
`trainB/0001.jpg`. Both images of a pair get the SAME random resize, crop and flip (one
`Augmentation` drawn from the pair's seed), as the reference's `AlignedDataset` does; unpaired
methods keep unaligned sampling (`folders.UnalignedSampler`) on the same folders.

The Pix2Pix datasets (facades, maps, edges2shoes, ...) store each pair as one file: the A image
on the left half, the B image on the right (`train/*.jpg`, `test/*.jpg`, optional `val/`).
`as_two_domain` splits such a folder once into the two-domain layout in the cache
(`<split>A/`, `<split>B/`, PNG: lossless, so the pixels are exactly the decoded halves); every
reader downstream (training, evaluation sets, real-image statistics, sample grids, unpaired
methods) then sees a plain, paired two-domain dataset.

Sampling follows the suite's rule (docs/decisions.md, "Sampling is a function of (seed, epoch)"):
`AlignedSampler` draws the order and each pair's augmentation seed from (seed, epoch) alone.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from i2ibench import files
from i2ibench.data.images import DataError, check_images, is_hidden, list_images, load_rgb, raise_for_bad
from i2ibench.data.transforms import TrainTransform

SIDE_BY_SIDE_SPLITS = ("train", "val", "test")
SPLIT_RECIPE_VERSION = 1  # bump when the split files change, so old cached splits are not reused


# -- sampling ---------------------------------------------------------------------------------------
class AlignedDraw(NamedTuple):
    """One training sample: the index of a pair and the seed of its (shared) augmentation."""

    index: int
    seed: int


class AlignedSampler(Sampler[AlignedDraw]):
    """Every pair once per epoch in a random order, with a seed per draw, all from (seed, epoch).

    The interface of `folders.UnalignedSampler` (an int `epoch`, `set_epoch`), which
    `data.resumable.ResumableDataLoader` reads to resume mid-epoch exactly.
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[AlignedDraw]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)
        seeds = torch.randint(0, 2**62, (self.size,), generator=generator)
        for k in range(self.size):
            yield AlignedDraw(int(order[k]), int(seeds[k]))


class AlignedDataset(Dataset):
    """Training pairs {A, B, A_path, B_path}: one augmentation drawn per pair, applied to both images."""

    load = staticmethod(load_rgb)  # the datamodule may put a DecodedImageCache here

    def __init__(self, paths_a: list[Path], paths_b: list[Path], transform: TrainTransform) -> None:
        if [p.stem for p in paths_a] != [p.stem for p in paths_b]:
            raise DataError("aligned pairs must be given in matching order (use `pair_by_stem`)")
        self.paths_a, self.paths_b, self.transform = paths_a, paths_b, transform

    def __len__(self) -> int:
        return len(self.paths_a)

    def __getitem__(self, draw: AlignedDraw) -> dict:
        image_a, image_b = self.load(self.paths_a[draw.index]), self.load(self.paths_b[draw.index])
        augmentation = self.transform.sample(image_a.size, torch.Generator().manual_seed(draw.seed))
        return {"A": self.transform.image(image_a, augmentation), "B": self.transform.image(image_b, augmentation),
                "A_path": str(self.paths_a[draw.index]), "B_path": str(self.paths_b[draw.index])}


# -- checks -----------------------------------------------------------------------------------------
def unpaired_reason(paths_a: list[Path], paths_b: list[Path]) -> str | None:
    """Why these two folders are not paired by file stem (None when they are)."""
    stems_a, stems_b = {p.stem for p in paths_a}, {p.stem for p in paths_b}
    if len(stems_a) != len(paths_a) or len(stems_b) != len(paths_b):
        return "a file stem occurs twice in one folder (e.g. 0001.png and 0001.jpg)"
    only_a, only_b = sorted(stems_a - stems_b), sorted(stems_b - stems_a)
    if not only_a and not only_b:
        return None
    examples = "; ".join(f"{len(only)} only in {side}/ (e.g. {', '.join(only[:3])})"
                         for side, only in ((paths_a[0].parent.name, only_a), (paths_b[0].parent.name, only_b)) if only)
    return f"the file names do not match: {examples}"


def pair_by_stem(paths_a: list[Path], paths_b: list[Path], method_hint: str = "") -> tuple[list[Path], list[Path]]:
    """The two folders' files as aligned lists (A's order); a DataError if they are not paired by stem."""
    reason = unpaired_reason(paths_a, paths_b)
    if reason is not None:
        folder_a, folder_b = paths_a[0].parent, paths_b[0].parent
        raise DataError(f"{folder_a.parent}: paired training needs {folder_a.name}/ and {folder_b.name}/ to hold the "
                        f"same file names (an image and its own counterpart), but {reason}. Rename the files so each "
                        "pair shares a name, or train an unpaired method (cyclegan, cut) on this dataset"
                        + (f" {method_hint}" if method_hint else "") + ".")
    by_stem = {p.stem: p for p in paths_b}
    return list(paths_a), [by_stem[p.stem] for p in paths_a]


def pair_size_problems(paths_a: list[Path], paths_b: list[Path],
                       sizes: dict[Path, tuple[int, int]]) -> dict[Path, str]:
    """Pairs whose two images differ in size (one crop box cannot fit both): {A file: what is wrong}."""
    bad = {}
    for path_a, path_b in zip(paths_a, paths_b):
        size_a, size_b = sizes.get(path_a), sizes.get(path_b)
        if size_a is not None and size_b is not None and size_a != size_b:
            bad[path_a] = (f"{size_a[0]}x{size_a[1]}, but its pair {path_b} is {size_b[0]}x{size_b[1]}; the two "
                           "images of a pair must be the same size (resize one to match)")
    return bad


# -- the side-by-side A|B layout ------------------------------------------------------------------
def is_side_by_side(root: Path) -> bool:
    """`train/` holds image files and no domain folders: the Pix2Pix datasets' `A|B` layout."""
    train = Path(root) / "train"
    if not train.is_dir():
        return False
    entries = [p for p in train.iterdir() if not is_hidden(p)]
    return bool(entries) and not any(p.is_dir() for p in entries)


def as_two_domain(root: Path) -> Path:
    """The dataset folder to read: `root` itself, or for a side-by-side dataset its split copy in the cache.

    The copy is made once (atomically; concurrent processes agree) and reused while the source
    files are unchanged (the cache key covers their names, sizes and modification times).
    Every file is decoded first; an undecodable file or an odd width is one DataError naming
    each bad file, before anything is written.
    """
    root = Path(root)
    if not is_side_by_side(root):
        return root
    splits = {split: list_images(root / split) for split in SIDE_BY_SIDE_SPLITS if (root / split).is_dir()}
    target = files.home() / "datasets" / "side-by-side" / f"{root.resolve().name}-{_fingerprint(root, splits)}"
    if target.is_dir():
        return target
    bad: dict[Path, str] = {}
    for split, paths in splits.items():
        check = check_images(paths, desc=f"checking {root / split}")
        bad.update(check.bad)
        for path, (width, height) in check.sizes.items():
            if width % 2:
                bad[path] = (f"width {width} is odd: a side-by-side file holds A (left) and B (right) halves of "
                             "equal width; crop or pad it to an even width")
    raise_for_bad(bad)
    with files.atomic_directory(target) as tmp:
        for split, paths in splits.items():
            for domain in ("A", "B"):
                (tmp / f"{split}{domain}").mkdir()
            for path in paths:
                image_a, image_b = split_pair(load_rgb(path))
                image_a.save(tmp / f"{split}A" / f"{path.stem}.png")
                image_b.save(tmp / f"{split}B" / f"{path.stem}.png")
    return target


def _fingerprint(root: Path, splits: dict[str, list[Path]]) -> str:
    digest = hashlib.sha256(f"v{SPLIT_RECIPE_VERSION}|{root.resolve()}".encode())
    for split, paths in splits.items():
        for path in paths:
            stat = path.stat()
            digest.update(f"|{split}/{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def split_pair(image: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The A (left) and B (right) halves of one side-by-side image."""
    half = image.width // 2
    return image.crop((0, 0, half, image.height)), image.crop((half, 0, image.width, image.height))
