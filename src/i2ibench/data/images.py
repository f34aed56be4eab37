"""Finding, checking and decoding image files.

Every image a run will read is checked before training starts (`check_images`): a file that
cannot be decoded, is truncated or empty, is not an image, is smaller than the crop, or is a
symbolic link that dangles or loops stops the run with one error that lists each bad file and
what to do. Modes other than RGB are
converted on load (`load_rgb`) and the conversion is reported once, never silently.
"""

from __future__ import annotations

import errno
import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from i2ibench.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_LISTED = 20  # bad files named in one error message


class DataError(UserError, ValueError):
    """Bad input data: the message names the file(s) and the fix."""


def is_hidden(path: Path) -> bool:
    """Dot-files (.DS_Store, ._foo.jpg from macOS archives) are not data; they are ignored by design."""
    return path.name.startswith(".")


def link_problem(path: Path) -> str | None:
    """What is wrong with `path` if it is a symbolic link that leads nowhere (dangling or looping), else None."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as err:
        target = os.readlink(path)
        if err.errno == errno.ELOOP:
            return f"symbolic link loop (-> {target}); point the link at a real file or remove it"
        return f"dangling symbolic link (-> {target}, which does not exist); fix the link or remove it"
    return None


def list_images(folder: Path) -> list[Path]:
    """The image files of one folder, sorted by name.

    A missing or empty folder and any visible non-image file are errors: a stray file usually
    means a wrong folder, and skipping it silently would hide that. Symbolic links that dangle or
    loop are listed too, so that `check_images` reports them as bad files. Sub-folders are not
    read (one folder per domain); they are reported once as a warning.
    """
    folder = Path(folder)
    if not folder.is_dir():
        if problem := link_problem(folder):
            raise DataError(f"{folder}: {problem}.")
        raise DataError(f"{folder}: folder not found. Create it and put the domain's images in it.")
    entries = [p for p in folder.iterdir() if not is_hidden(p)]
    files = sorted(p for p in entries if p.is_file() or link_problem(p))
    subfolders = sorted(p for p in entries if p.is_dir())
    if subfolders:
        names = ", ".join(p.name + "/" for p in subfolders[:10]) + (" ..." if len(subfolders) > 10 else "")
        log.warning(f"{folder}: {len(subfolders)} sub-folder(s) not read ({names}); "
                    "a domain's images must be in the folder itself")
    others = [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
    if others:
        raise DataError(_listing(
            f"{folder}: {len(others)} file(s) that are not images ({', '.join(IMAGE_EXTENSIONS)}); "
            "move them out of the dataset folder", others))
    if not files:
        raise DataError(f"{folder}: no images in this folder. Put the domain's images ({', '.join(IMAGE_EXTENSIONS)}) in it.")
    return files


def _listing(headline: str, paths: list[Path], reasons: dict[Path, str] | None = None) -> str:
    lines = [headline + ":"]
    for p in paths[:MAX_LISTED]:
        lines.append(f"  {p}" + (f": {reasons[p]}" if reasons else ""))
    if len(paths) > MAX_LISTED:
        lines.append(f"  ... and {len(paths) - MAX_LISTED} more")
    return "\n".join(lines)


@dataclass
class ImageCheck:
    """What `check_images` found: sizes and the modes that will be converted to RGB on load."""

    sizes: dict[Path, tuple[int, int]] = field(default_factory=dict)
    conversions: Counter = field(default_factory=Counter)
    examples: dict[str, Path] = field(default_factory=dict)
    bad: dict[Path, str] = field(default_factory=dict)  # file -> what is wrong with it

    def report_conversions(self, where: str) -> str | None:
        if not self.conversions:
            return None
        parts = [f"{n} {mode} (e.g. {self.examples[mode]})" for mode, n in sorted(self.conversions.items())]
        return f"{where}: converting to RGB on load: " + "; ".join(parts)


def check_images(paths: list[Path], min_size: int | None = None, desc: str = "checking images") -> ImageCheck:
    """Decode every image fully; record every bad file (see `raise_for_bad`) and every conversion.

    `min_size`: images whose shorter side is below it are errors (used when the pipeline crops
    without resizing first).
    """
    from tqdm import tqdm

    result = ImageCheck()
    bad = result.bad
    for path in tqdm(paths, desc=desc, unit="img", disable=len(paths) < 500, leave=False):
        if problem := link_problem(path):
            bad[path] = problem
            continue
        try:
            if path.stat().st_size == 0:
                raise DataError("empty file (0 bytes)")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as img:
                    img.load()  # full decode: catches truncated files that open() accepts
                    mode, size = img.mode, img.size
        except DataError as err:
            bad[path] = str(err)
            continue
        except Exception as err:  # PIL raises several types for undecodable data
            bad[path] = f"cannot be decoded as an image ({type(err).__name__}: {err})"
            continue
        result.sizes[path] = size
        if min_size is not None and min(size) < min_size:
            bad[path] = f"{size[0]}x{size[1]} is smaller than the crop size {min_size}"
        elif mode != "RGB":
            label = describe_mode(mode, path)
            result.conversions[label] += 1
            result.examples.setdefault(label, path)
    return result


def raise_for_bad(bad: dict[Path, str]) -> None:
    """One DataError that names every bad file and what is wrong with it."""
    if bad:
        raise DataError(_listing(
            f"{len(bad)} bad image file(s); fix or remove each one (re-export it as RGB PNG/JPEG, "
            "or for small images lower crop_size)", list(bad), bad))


def describe_mode(mode: str, path: Path) -> str:
    names = {"L": "grayscale", "LA": "grayscale+alpha", "RGBA": "RGBA (composited on white)",
             "P": "palette", "PA": "palette+alpha", "1": "1-bit", "CMYK": "CMYK",
             "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "16/32-bit integer", "F": "float"}
    return names.get(mode, mode)


def load_rgb(path: Path) -> Image.Image:
    """Decode an image as 8-bit RGB.

    Grayscale and palette images are expanded; alpha is composited over white (dropping it
    would show whatever colour the transparent pixels happen to hold); 16-bit and 32-bit
    integer images are rescaled to 8 bits (PIL's own convert would clip them to white).
    """
    with Image.open(path) as img:
        img.load()
        mode = img.mode
        if mode == "RGB":
            return img.copy()
        if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            array = np.asarray(img, dtype=np.float64)
            peak = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
            gray = np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8)
            return Image.fromarray(gray, mode="L").convert("RGB")
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")


class DecodedImageCache:
    """Decoded training images kept in memory, up to `max_mb` per process (each dataloader worker has
    its own), so small datasets are decoded once instead of once per epoch. Images are returned as
    stored: the transforms never modify an image in place."""

    def __init__(self, max_mb: int) -> None:
        self.max_bytes, self.bytes, self.images = max_mb * 2**20, 0, {}

    def __call__(self, path: Path) -> Image.Image:
        image = self.images.get(path)
        if image is None:
            image = load_rgb(path)
            size = image.width * image.height * 3
            if self.bytes + size <= self.max_bytes:
                self.images[path] = image
                self.bytes += size
        return image
