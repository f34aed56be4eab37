"""Resize / crop / flip with explicit parameters, applied identically to an image and its masks.

A random draw is a value (`Augmentation`), sampled once from a seeded generator and then applied
to the image and to every mask. The reference InstaGAN instead reseeds the global RNG per
call, which breaks as soon as two calls consume a different number of draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode

from i2ibench.errors import ConfigError

PREPROCESS_MODES = ("resize_and_crop", "crop", "resize")


@dataclass(frozen=True)
class Augmentation:
    """One draw: the crop box (top, left, height, width), the resize and the flip.

    CycleGAN resizes first and crops the resized image; StarGAN v2 crops the original and then
    resizes the crop (`crop_first`).
    """

    top: int
    left: int
    height: int
    width: int
    flip: bool
    resize_to: tuple[int, int] | None  # (height, width); None keeps the size
    crop_first: bool = False


def to_model_range(img: Image.Image) -> Tensor:
    """8-bit RGB -> float tensor in [-1, 1] (the reference's ToTensor + Normalize(0.5, 0.5))."""
    return TF.to_tensor(img).mul_(2.0).sub_(1.0)


def to_mask(mask: Image.Image) -> Tensor:
    """A binarised mask (0 / 255, from `masks.load_mask`) -> 1 x H x W float tensor in {0, 1}.

    The foreground rule is applied once, at full resolution, by `masks.foreground`; the nearest
    resize, crop and flip keep the mask binary, so nonzero here is exactly that foreground.
    """
    return (TF.pil_to_tensor(mask.convert("L")) > 0).float()


class TrainTransform:
    """The CycleGAN reference's training pipeline.

    resize_and_crop: resize to load_size x load_size (bicubic), random crop_size crop (the
    reference default, 286 -> 256); crop: random crop from the original (no resize); resize:
    resize straight to crop_size. Then a horizontal flip with probability 0.5 when `flip`.
    """

    def __init__(self, load_size: int = 286, crop_size: int = 256, flip: bool = True,
                 preprocess: str = "resize_and_crop") -> None:
        if preprocess not in PREPROCESS_MODES:
            raise ConfigError(f"data.preprocess: unknown value {preprocess!r}; use one of {', '.join(PREPROCESS_MODES)}")
        if preprocess == "resize_and_crop" and load_size < crop_size:
            raise ConfigError(f"data.load_size ({load_size}) is smaller than data.crop_size ({crop_size}): "
                              "resize_and_crop resizes to load_size, then crops crop_size from it; set "
                              "--data.load_size to at least the crop size (CycleGAN: 286 for 256)")
        self.load_size, self.crop_size, self.flip, self.preprocess = load_size, crop_size, flip, preprocess

    @property
    def min_image_size(self) -> int | None:
        """Smallest image side this pipeline accepts (only cropping without resizing needs one)."""
        return self.crop_size if self.preprocess == "crop" else None

    def sample(self, image_size: tuple[int, int], generator: torch.Generator) -> Augmentation:
        """Draw the crop and flip for an image of `image_size` = (width, height)."""
        width, height = image_size
        if self.preprocess == "resize_and_crop":
            resize_to, (height, width) = (self.load_size, self.load_size), (self.load_size, self.load_size)
        elif self.preprocess == "resize":
            resize_to, (height, width) = (self.crop_size, self.crop_size), (self.crop_size, self.crop_size)
        else:
            resize_to = None
        top = int(torch.randint(0, height - self.crop_size + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - self.crop_size + 1, (1,), generator=generator))
        flip = self.flip and bool(torch.rand((), generator=generator) < 0.5)
        return Augmentation(top, left, self.crop_size, self.crop_size, flip, resize_to)

    def image(self, img: Image.Image, aug: Augmentation) -> Tensor:
        return to_model_range(apply(img, aug, InterpolationMode.BICUBIC))

    def mask(self, mask: Image.Image, aug: Augmentation) -> Tensor:
        return to_mask(apply(mask, aug, InterpolationMode.NEAREST))


class StarGANTrainTransform:
    """StarGAN v2's training pipeline (clovaai/stargan-v2, core/data_loader.py, get_train_loader).

    With probability 0.5 a random resized crop (scale 0.8-1.0, aspect ratio 0.9-1.1), then a
    resize to img_size x img_size and a horizontal flip with probability 0.5.
    """

    def __init__(self, img_size: int = 256, crop_prob: float = 0.5, scale: tuple[float, float] = (0.8, 1.0),
                 ratio: tuple[float, float] = (0.9, 1.1)) -> None:
        self.img_size, self.crop_prob, self.scale, self.ratio = img_size, crop_prob, scale, ratio
        self.min_image_size = None

    def sample(self, image_size: tuple[int, int], generator: torch.Generator) -> Augmentation:
        width, height = image_size
        top, left, crop_h, crop_w = 0, 0, height, width
        if float(torch.rand((), generator=generator)) < self.crop_prob:
            top, left, crop_h, crop_w = self._random_resized_box(width, height, generator)
        flip = bool(torch.rand((), generator=generator) < 0.5)
        return Augmentation(top, left, crop_h, crop_w, flip, (self.img_size, self.img_size), crop_first=True)

    def _random_resized_box(self, width: int, height: int, generator: torch.Generator) -> tuple[int, int, int, int]:
        """torchvision's RandomResizedCrop.get_params, drawing from our generator instead of the global RNG."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * float(torch.empty(()).uniform_(*self.scale, generator=generator))
            aspect = math.exp(float(torch.empty(()).uniform_(*log_ratio, generator=generator)))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
                left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
                return top, left, h, w
        side = min(width, height)  # fallback: torchvision's central crop
        return (height - side) // 2, (width - side) // 2, side, side

    def image(self, img: Image.Image, aug: Augmentation) -> Tensor:
        return to_model_range(apply(img, aug, InterpolationMode.BILINEAR))


class EvalTransform:
    """Evaluation: resize to crop_size x crop_size (bicubic); no crop, no flip."""

    def __init__(self, crop_size: int = 256) -> None:
        self.crop_size = crop_size

    def augmentation(self) -> Augmentation:
        size = self.crop_size
        return Augmentation(0, 0, size, size, False, (size, size))

    def image(self, img: Image.Image) -> Tensor:
        return to_model_range(apply(img, self.augmentation(), InterpolationMode.BICUBIC))

    def mask(self, mask: Image.Image) -> Tensor:
        return to_mask(apply(mask, self.augmentation(), InterpolationMode.NEAREST))


def apply(img: Image.Image, aug: Augmentation, interpolation: InterpolationMode) -> Image.Image:
    """Resize, crop and flip one PIL image by the explicit parameters in `aug` (crop first if it says so)."""

    def resize(img: Image.Image) -> Image.Image:
        if aug.resize_to is not None and img.size != (aug.resize_to[1], aug.resize_to[0]):
            return TF.resize(img, list(aug.resize_to), interpolation=interpolation)
        return img

    def crop(img: Image.Image) -> Image.Image:
        if (aug.top, aug.left, aug.height, aug.width) != (0, 0, img.size[1], img.size[0]):
            return TF.crop(img, aug.top, aug.left, aug.height, aug.width)
        return img

    img = resize(crop(img)) if aug.crop_first else crop(resize(img))
    if aug.flip:
        img = TF.hflip(img)
    return img
