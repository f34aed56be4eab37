"""Resize / crop / flip with explicit parameters, applied identically to an image and its masks.

A random draw is a value (`Augmentation`), sampled once from a seeded generator and then applied
to the image and to every mask. The reference InstaGAN instead reseeds the global RNG per
call, which breaks as soon as two calls consume a different number of draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode

PREPROCESS_MODES = ("resize_and_crop", "crop", "resize")


@dataclass(frozen=True)
class Augmentation:
    """One draw: the crop box (top, left, height, width) in the resized image, and the flip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool
    resize_to: tuple[int, int] | None  # (height, width) before cropping; None keeps the size


def to_model_range(img: Image.Image) -> Tensor:
    """8-bit RGB -> float tensor in [-1, 1] (the reference's ToTensor + Normalize(0.5, 0.5))."""
    return TF.to_tensor(img).mul_(2.0).sub_(1.0)


def to_mask(mask: Image.Image) -> Tensor:
    """A mask image -> 1 x H x W float tensor in {0, 1} (nonzero is foreground)."""
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
            raise ValueError(f"unknown preprocess {preprocess!r}; use one of {PREPROCESS_MODES}")
        if preprocess == "resize_and_crop" and load_size < crop_size:
            raise ValueError(f"load_size ({load_size}) must be at least crop_size ({crop_size})")
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
    """Resize, crop and flip one PIL image by the explicit parameters in `aug`."""
    if aug.resize_to is not None and img.size != (aug.resize_to[1], aug.resize_to[0]):
        img = TF.resize(img, list(aug.resize_to), interpolation=interpolation)
    if (aug.top, aug.left, aug.height, aug.width) != (0, 0, img.size[1], img.size[0]):
        img = TF.crop(img, aug.top, aug.left, aug.height, aug.width)
    if aug.flip:
        img = TF.hflip(img)
    return img
