"""Built-in datasets made from the real photographs that scikit-image ships (no download).

They make `make bench` and the tests runnable on a fresh CPU machine in minutes. Each set is
generated deterministically from a seed and a recipe version, written atomically into the
cache (`files.home()/datasets/<name>-<size>px-v<version>`), and reused afterwards.

- `builtin`: photo crops (domain A) <-> pencil-sketch renditions of other crops (domain B);
  unpaired for training; val and test paired (a photo and its own sketch share a file name),
  so SSIM/PSNR/LPIPS against ground truth mean something.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from i2ibench import files

RECIPE_VERSION = 1


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


@dataclass(frozen=True)
class BuiltinSpec:
    name: str
    make: Callable[[Path, int, np.random.Generator], None]
    description: str
    default_size: int = 64


def _write(folder: Path, images: list[np.ndarray], start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images, start):
        Image.fromarray(image).save(folder / f"{index:04d}.png")


def make_photo_sketch(root: Path, size: int, rng: np.random.Generator,
                      n_train: int = 200, n_val: int = 20, n_test: int = 50) -> None:
    photos = _load_photos()
    _write(root / "trainA", random_crops(photos, n_train, size, rng))
    _write(root / "trainB", [pencil_sketch(c) for c in random_crops(photos, n_train, size, rng)])
    for split, count in (("val", n_val), ("test", n_test)):
        crops = random_crops(photos, count, size, rng)  # paired: a photo and its own sketch
        _write(root / f"{split}A", crops)
        _write(root / f"{split}B", [pencil_sketch(c) for c in crops])


BUILTINS: dict[str, BuiltinSpec] = {
    "builtin": BuiltinSpec("builtin", make_photo_sketch,
                           "photo <-> pencil sketch, from scikit-image's photos (two-domain, paired val/test)"),
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
