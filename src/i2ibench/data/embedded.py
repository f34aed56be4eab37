"""Built-in datasets made from the real photographs that scikit-image ships (no download).

They make `make bench` and the tests runnable on a fresh CPU machine in minutes. Each set is
generated deterministically from a seed and a recipe version, written atomically into the
cache (`files.home()/datasets/<name>-<size>px-v<version>`), and reused afterwards.

- `builtin`: photo crops (domain A) <-> pencil-sketch renditions of other crops (domain B);
  unpaired for training; val and test paired (a photo and its own sketch share a file name),
  so SSIM/PSNR/LPIPS against ground truth mean something.
- `builtin-multi`: three domains (photo, pencil sketch, flat-colour cartoon), each of its own
  crops, in the multi-domain layout: StarGAN v2 on a fresh machine. Three, like AFHQ, so the
  12 evaluation tasks (6 ordered pairs x latent/reference) stay affordable on a CPU.
- `builtin-masks`: ellipses (A) <-> rectangles (B), 1-3 per image with one instance mask each,
  drawn over crops of scikit-image's brick, grass and gravel photographs (InstaGAN layout):
  the mask models on a fresh machine; the background is what they must leave alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from i2ibench import files

RECIPE_VERSION = 3  # 2: training files named per domain (the train split is not paired); 3: builtin-multi's too


def _load_photos() -> list[np.ndarray]:
    """The colour photographs bundled with scikit-image (all ship in the wheel: no network)."""
    import skimage.data as data

    left, right, _ = data.stereo_motorcycle()
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), left, right,
              data.hubble_deep_field(), data.immunohistochemistry(), data.retina()]
    return [p[..., :3] for p in photos]


def random_crops(photos: list[np.ndarray], count: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`count` square crops (25-70% of the shorter side) at random places, resized to `size`."""
    crops = []
    for _ in range(count):
        photo = photos[rng.integers(len(photos))]
        height, width = photo.shape[:2]
        side = int(rng.uniform(0.25, 0.7) * min(height, width))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.LANCZOS)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crops.append(np.asarray(crop))
    return crops


def pencil_sketch(rgb: np.ndarray) -> np.ndarray:
    """A pencil-sketch rendition: colour-dodge blend of the gray image with its blurred negative.

    The classic darkroom recipe: lines appear where the image has edges, flat areas go white.
    """
    from skimage.color import rgb2gray
    from skimage.filters import gaussian

    gray = rgb2gray(rgb)
    blurred_negative = gaussian(1.0 - gray, sigma=max(1.0, rgb.shape[0] / 48))
    dodge = np.clip(gray / np.maximum(1.0 - blurred_negative, 1e-3), 0.0, 1.0)
    sketch = dodge ** 2.0  # darken the strokes: at 64 px the plain dodge is nearly white
    return np.repeat((sketch * 255.0 + 0.5).astype(np.uint8)[..., None], 3, axis=2)


def flat_colour_cartoon(rgb: np.ndarray) -> np.ndarray:
    """A flat-colour cartoon rendition: superpixels filled with their mean colour, dark edge lines."""
    from skimage.color import label2rgb, rgb2gray
    from skimage.feature import canny
    from skimage.segmentation import slic

    regions = slic(rgb, n_segments=48, compactness=12, start_label=0)
    flat = label2rgb(regions, rgb, kind="avg", bg_label=-1)
    flat[canny(rgb2gray(rgb), sigma=2.0)] = 20
    return np.clip(flat, 0, 255).astype(np.uint8)


def textured_shapes(shape: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """A crop of a real texture photo (brick, grass or gravel, tinted) with 1-3 filled shapes on it.

    `shape` is "ellipse" (any orientation) or "rectangle"; returns the RGB image and one boolean
    mask per shape (later shapes occlude earlier ones, and the masks say so).
    """
    import skimage.data as data
    from skimage.draw import ellipse, rectangle

    texture = [data.brick, data.grass, data.gravel][rng.integers(3)]()
    top, left = rng.integers(0, texture.shape[0] - 2 * size, 2)
    gray = np.asarray(Image.fromarray(texture[top:top + 2 * size, left:left + 2 * size]).resize((size, size), Image.LANCZOS))
    tint = rng.uniform(0.6, 1.0, 3)
    image = (gray[..., None] * tint).astype(np.float64)
    masks: list[np.ndarray] = []
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0.2, 0.8, 2) * size
        ry, rx = rng.uniform(0.08, 0.22, 2) * size
        if shape == "ellipse":
            rows, cols = ellipse(cy, cx, ry, rx, shape=(size, size), rotation=rng.uniform(0, np.pi))
        else:
            rows, cols = rectangle((max(0, int(cy - ry)), max(0, int(cx - rx))),
                                   end=(min(size - 1, int(cy + ry)), min(size - 1, int(cx + rx))), shape=(size, size))
        mask = np.zeros((size, size), bool)
        mask[rows, cols] = True
        for earlier in masks:
            earlier &= ~mask  # occluded parts belong to the shape on top
        image[mask] = rng.uniform(40, 230, 3) * (0.85 + 0.15 * gray[mask, None] / 255)
        masks.append(mask)
    return np.clip(image, 0, 255).astype(np.uint8), [m for m in masks if m.any()]


def make_shapes(root: Path, size: int, rng: np.random.Generator, n_train: int = 100, n_test: int = 12) -> None:
    for split, count in (("train", n_train), ("test", n_test)):
        for domain, shape in (("A", "ellipse"), ("B", "rectangle")):
            images, segs = root / f"{split}{domain}", root / f"{split}{domain}_seg"
            images.mkdir(parents=True)
            segs.mkdir(parents=True)
            for index in range(count):  # names differ per domain: the two test folders are not pairs
                image, masks = textured_shapes(shape, size, rng)
                Image.fromarray(image).save(images / f"{shape}_{index:04d}.png")
                for k, mask in enumerate(masks):
                    Image.fromarray((mask * 255).astype(np.uint8)).save(segs / f"{shape}_{index:04d}_{k}.png")


@dataclass(frozen=True)
class BuiltinSpec:
    name: str
    make: Callable[[Path, int, np.random.Generator], None]
    description: str
    default_size: int = 64


def _write(folder: Path, images: list[np.ndarray], start: int = 0, prefix: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images, start):
        Image.fromarray(image).save(folder / f"{prefix}{index:04d}.png")


def make_photo_sketch(root: Path, size: int, rng: np.random.Generator,
                      n_train: int = 200, n_val: int = 20, n_test: int = 50) -> None:
    photos = _load_photos()
    # Unrelated crops per domain, named per domain: equal names would declare them pairs (paired mode).
    _write(root / "trainA", random_crops(photos, n_train, size, rng), prefix="photo_")
    _write(root / "trainB", [pencil_sketch(c) for c in random_crops(photos, n_train, size, rng)], prefix="sketch_")
    for split, count in (("val", n_val), ("test", n_test)):
        crops = random_crops(photos, count, size, rng)  # paired: a photo and its own sketch
        _write(root / f"{split}A", crops)
        _write(root / f"{split}B", [pencil_sketch(c) for c in crops])


def make_photo_sketch_cartoon(root: Path, size: int, rng: np.random.Generator,
                              n_train: int = 120, n_test: int = 12) -> None:
    """Three domains of different crops: photo, pencil sketch, flat-colour cartoon (multi-domain layout)."""
    photos = _load_photos()
    renditions = {"photo": lambda c: c, "sketch": pencil_sketch, "cartoon": flat_colour_cartoon}
    for split, count in (("train", n_train), ("test", n_test)):
        for domain, render in renditions.items():
            # named per domain: in a two-domain view of one pair, equal names would declare them pairs
            _write(root / split / domain, [render(c) for c in random_crops(photos, count, size, rng)],
                   prefix=f"{domain}_")


BUILTINS: dict[str, BuiltinSpec] = {
    "builtin": BuiltinSpec("builtin", make_photo_sketch,
                           "photo <-> pencil sketch, from scikit-image's photos (two-domain, paired val/test)"),
    "builtin-multi": BuiltinSpec("builtin-multi", make_photo_sketch_cartoon,
                                 "photo / pencil sketch / flat-colour cartoon, from scikit-image's photos (multi-domain)"),
    "builtin-masks": BuiltinSpec("builtin-masks", make_shapes,
                                 "ellipses <-> rectangles with instance masks over brick / grass / gravel photos"),
}


def materialize(name: str, size: int | None = None, seed: int = 0) -> Path:
    """Generate built-in dataset `name` into the cache (once) and return its folder."""
    spec = BUILTINS[name]
    size = size or spec.default_size
    root = files.home() / "datasets" / f"{name}-{size}px-seed{seed}-v{RECIPE_VERSION}"
    if not root.is_dir():
        with files.atomic_directory(root) as tmp:
            spec.make(tmp, size, np.random.default_rng(seed))
    return root
