"""SSIM with a Gaussian window over each image's valid interior (Wang et al. 2004).

Shared by the SSIM metric (metrics/content.py, float64) and the differentiable SSIM loss of
SSIM+LSGAN (losses.py, the training dtype). Settings are Wang et al.'s and scikit-image's
`structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`: an 11 x 11
Gaussian window, sigma 1.5, K1 0.01, K2 0.03, the map averaged over the valid interior only (no
padded border; torchmetrics 1.9 averages over a reflect-padded border too, which at 64 px shifts
the value by several percent).

The computation is in the dtype of the inputs. The variance E[x^2] - E[x]^2 cancels badly in
float32 on near-white images (sketches: errors up to 2.6e-4 against scikit-image, and SSIM(x, x)
= 0.99974 through torchmetrics), so the metric passes float64, which agrees with scikit-image to
1e-13 (tests/test_metrics_ssim.py). The Gaussian window is applied as two 1-D passes of shifted
slices: convolution routines are slow in float64 on the CPU (torchmetrics' float64 SSIM is ~50x
slower than this).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

KERNEL_SIZE, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03
BORDER = KERNEL_SIZE // 2


def gaussian_window() -> list[float]:
    """The normalised 1-D Gaussian taps (the 2-D window is their outer product)."""
    taps = [math.exp(-((i - BORDER) ** 2) / (2 * SIGMA * SIGMA)) for i in range(KERNEL_SIZE)]
    total = sum(taps)
    return [t / total for t in taps]


def valid_blur(images: Tensor) -> Tensor:
    """Gaussian-weighted local means over every full 11 x 11 window: ... x (H - 10) x (W - 10)."""
    taps = gaussian_window()
    rows = images.shape[-2] - KERNEL_SIZE + 1
    vertical = images[..., 0:rows, :] * taps[0]
    for i in range(1, KERNEL_SIZE):  # in place: no new tensor per tap, and autograd-safe (add needs no saved inputs)
        vertical.add_(images[..., i:i + rows, :], alpha=taps[i])
    cols = images.shape[-1] - KERNEL_SIZE + 1
    blurred = vertical[..., 0:cols] * taps[0]
    for i in range(1, KERNEL_SIZE):
        blurred.add_(vertical[..., i:i + cols], alpha=taps[i])
    return blurred


def ssim_map(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """The SSIM map of each image pair over its valid interior: N x C x (H - 10) x (W - 10)."""
    if min(x.shape[-2:]) < KERNEL_SIZE:
        raise ValueError(f"SSIM needs images of at least {KERNEL_SIZE} x {KERNEL_SIZE} pixels, got {tuple(x.shape[-2:])}")
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = valid_blur(torch.stack([x, y, x * x, y * y, x * y])).unbind(0)
    var_x, var_y = mean_xx - mean_x * mean_x, mean_yy - mean_y * mean_y
    covariance = mean_xy - mean_x * mean_y
    return (((2 * mean_x * mean_y + c1) * (2 * covariance + c2))
            / ((mean_x * mean_x + mean_y * mean_y + c1) * (var_x + var_y + c2)))


def ssim_per_image(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Mean SSIM of each image pair (N x C x H x W), channels averaged; differentiable."""
    return ssim_map(x, y, data_range).mean(dim=(1, 2, 3))


def masked_ssim_per_image(x: Tensor, y: Tensor, keep: Tensor, data_range: float = 1.0) -> Tensor:
    """Mean SSIM over the pixels where `keep` (N x 1 x H x W, {0, 1}) is 1, within the valid interior."""
    keep = keep[..., BORDER:-BORDER, BORDER:-BORDER].to(x.dtype)
    weights = keep.expand(-1, x.shape[1], -1, -1)
    return (ssim_map(x, y, data_range) * weights).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3))
