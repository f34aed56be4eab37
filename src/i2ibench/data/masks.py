"""Images with instance masks (the InstaGAN layout): `trainA/ trainA_seg/ trainB/ trainB_seg/ ...`.

Each image `<stem>.png` has its instance masks `<stem>_<k>.png` in the `_seg` folder, one mask per
instance (k = 0, 1, ...; the extension's case does not matter). File names are matched literally:
`[`, `*` or `?` in a name are ordinary characters.

One foreground rule, used by the check, by training and by evaluation (`foreground`): a mask is
read as 8-bit grayscale (colour masks by luminance); a mask whose every pixel is 0 or 1 is a 0/1
mask and its 1s are foreground; any other mask is foreground where the value is at least 128 (half
of 255). So {0, 1} and {0, 255} masks mean the same, and an antialiased edge is cut at half its
range instead of growing the mask. Masks are binarised at full resolution, before any resize, so a
resize cannot reintroduce soft edges.

Masks are checked before training (`scan_masks`): a mask whose size differs from its image, that
cannot be decoded, or that is a dangling or looping symbolic link is an error; the rest is handled
as documented and reported once per folder:
- an image with no mask file has no instances (kept: the set can be empty);
- a mask that is not binary (antialiased edges) is thresholded as above;
- a mask with no foreground is dropped;
- more instances than `max_instances`: the largest are kept (the reference's decreasing order);
- a file in the `_seg` folder that belongs to no image (wrong name or no such image) is ignored.
Batches carry `<domain>_masks` (N x K x H x W in {0, 1}, zero-padded to K = max_instances) and
`<domain>_count` (the real instances of each image). Image and masks get the same resize, crop
and flip: one explicit draw (`transforms.Augmentation`), applied to each.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from i2ibench.data.folders import UnalignedDraw
from i2ibench.data.images import DataError, is_hidden, link_problem, load_rgb
from i2ibench.data.transforms import EvalTransform, TrainTransform

log = logging.getLogger(__name__)
ORDERS = ("decreasing", "random")
FOREGROUND_FROM = 128  # 8-bit value from which a pixel of a 0-255 mask is foreground (half the range)
MASK_NAME = re.compile(r"^(?P<stem>.+)_(?P<k>\d+)\.png$", re.IGNORECASE)  # greedy stem: "a_1_0.png" is a_1's mask 0


def foreground(gray: np.ndarray) -> np.ndarray:
    """The one foreground rule (module docstring): a 0/1 mask's 1s, else the pixels >= 128."""
    if gray.size and int(gray.max()) <= 1:
        return gray == 1
    return gray >= FOREGROUND_FROM


def _gray(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"))


def read_mask(path: Path) -> np.ndarray:
    """A mask file as a boolean array (True = foreground), by `foreground`."""
    with Image.open(path) as img:
        return foreground(_gray(img))


def load_mask(path: Path) -> Image.Image:
    """A mask file binarised to an 8-bit image of 0 and 255, ready for the (nearest) resize, crop and flip."""
    return Image.fromarray(read_mask(path).astype(np.uint8) * 255, mode="L")


@dataclass
class MaskScan:
    """Each image's usable mask files, largest first, and what was handled along the way."""

    masks: dict[Path, list[Path]] = field(default_factory=dict)
    notes: Counter = field(default_factory=Counter)
    bad: dict[Path, str] = field(default_factory=dict)


@dataclass
class MaskFolder:
    """A `_seg` folder listed once: each stem's mask files in k order, the other files, the broken links."""

    by_stem: dict[str, list[Path]] = field(default_factory=dict)
    strays: list[Path] = field(default_factory=list)  # not named <stem>_<k>.png
    broken: dict[Path, str] = field(default_factory=dict)  # dangling or looping symbolic links


def index_mask_folder(seg_folder: Path) -> MaskFolder:
    """List the folder once and parse each name (no glob: `[` or `*` in a name stay literal)."""
    found = MaskFolder()
    numbered: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted(seg_folder.iterdir()):
        if is_hidden(path):
            continue
        if problem := link_problem(path):
            found.broken[path] = problem
            continue
        if not path.is_file():
            found.strays.append(path)
            continue
        match = MASK_NAME.match(path.name)
        if match is None:
            found.strays.append(path)
            continue
        numbered.setdefault(match["stem"], []).append((int(match["k"]), path))
    found.by_stem = {stem: [p for _, p in sorted(items)] for stem, items in numbered.items()}
    return found


def scan_masks(images: list[Path], seg_folder: Path, image_sizes: dict[Path, tuple[int, int]],
               max_instances: int) -> MaskScan:
    """Check every mask of every image; order each image's masks by decreasing area, keep `max_instances`."""
    scan = MaskScan()
    if not seg_folder.is_dir():
        raise DataError(f"{seg_folder}: mask folder not found; a mask dataset has a <split><domain>_seg/ "
                        "folder beside each image folder, with <image stem>_<k>.png masks.")
    folder = index_mask_folder(seg_folder)
    scan.bad.update(folder.broken)
    stems = {image.stem for image in images}
    orphans = folder.strays + [p for stem, paths in folder.by_stem.items() if stem not in stems for p in paths]
    if orphans:
        scan.notes[f"files that are no image's <stem>_<k>.png mask, ignored (e.g. {orphans[0].name})"] += len(orphans)
    for image in images:
        areas = []
        for path in folder.by_stem.get(image.stem, []):
            try:
                with Image.open(path) as img:
                    img.load()
                    size, gray = img.size, _gray(img)
            except Exception as err:
                scan.bad[path] = f"cannot be decoded as an image ({type(err).__name__}: {err})"
                continue
            if size != image_sizes[image]:
                scan.bad[path] = (f"mask is {size[0]}x{size[1]} but its image {image.name} is "
                                  f"{image_sizes[image][0]}x{image_sizes[image][1]}; masks must align with their image")
                continue
            if not (np.isin(gray, (0, 255)).all() or np.isin(gray, (0, 1)).all()):
                scan.notes[f"masks with values other than 0/255 (or 0/1), foreground where >= {FOREGROUND_FROM}"] += 1
            area = int(foreground(gray).sum())
            if area == 0:
                scan.notes["masks with no foreground, dropped"] += 1
                continue
            areas.append((area, path))
        if not areas:
            scan.notes["images with no instance mask (kept, with an empty set)"] += 1
        if len(areas) > max_instances:
            scan.notes[f"images with more than {max_instances} instances (the largest kept)"] += 1
        areas.sort(key=lambda item: -item[0])
        scan.masks[image] = [path for _, path in areas[:max_instances]]
    return scan


def report(scan: MaskScan, where: Path) -> str | None:
    if not scan.notes:
        return None
    return f"{where}: " + "; ".join(f"{n} {what}" for what, n in sorted(scan.notes.items()))


def stack_masks(masks: list[torch.Tensor], slots: int, size: tuple[int, int], order: str,
                generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """K x H x W in {0, 1}: the masks in the chosen order, zero-padded to `slots`; and the count."""
    if order == "random" and len(masks) > 1:
        masks = [masks[int(i)] for i in torch.randperm(len(masks), generator=generator)]
    padded = torch.zeros(slots, *size)
    for k, mask in enumerate(masks[:slots]):
        padded[k] = mask[0]
    return padded, min(len(masks), slots)


class MaskedUnalignedDataset(Dataset):
    """Unaligned training pairs, each image with its instance masks: A, B, A_masks, B_masks, A_count, B_count."""

    load = staticmethod(load_rgb)  # the datamodule may put a DecodedImageCache here

    def __init__(self, paths: dict[str, list[Path]], masks: dict[Path, list[Path]], transform: TrainTransform,
                 max_instances: int, order: str = "decreasing") -> None:
        self.paths, self.masks, self.transform = paths, masks, transform
        self.max_instances, self.order = max_instances, order

    def __len__(self) -> int:
        return max(len(p) for p in self.paths.values())

    def __getitem__(self, draw: UnalignedDraw) -> dict:
        generator = torch.Generator().manual_seed(draw.seed)
        item = {}
        for domain, index in (("A", draw.index_a), ("B", draw.index_b)):
            path = self.paths[domain][index]
            image = self.load(path)
            aug = self.transform.sample(image.size, generator)  # one draw for the image and all its masks
            item[domain], item[f"{domain}_path"] = self.transform.image(image, aug), str(path)
            masks = [self.transform.mask(load_mask(m), aug) for m in self.masks[path]]
            size = item[domain].shape[-2:]
            item[f"{domain}_masks"], item[f"{domain}_count"] = stack_masks(masks, self.max_instances, size,
                                                                           self.order, generator)
        return item


class MaskedEvalImages(Dataset):
    """Source images of one two-domain task with their masks: {<src>, <src>_masks, <src>_count, task, index}."""

    def __init__(self, paths: list[Path], domain: str, task: str, masks: dict[Path, list[Path]],
                 transform: EvalTransform, max_instances: int) -> None:
        self.paths, self.domain, self.task, self.masks = paths, domain, task, masks
        self.transform, self.max_instances = transform, max_instances

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        image = self.transform.image(load_rgb(path))
        masks = [self.transform.mask(load_mask(m)) for m in self.masks[path]]
        stacked, count = stack_masks(masks, self.max_instances, image.shape[-2:], "decreasing", torch.Generator())
        return {self.domain: image, f"{self.domain}_path": str(path), f"{self.domain}_masks": stacked,
                f"{self.domain}_count": count, "task": self.task, "index": index}
