"""SSIM with a Gaussian window over each image's valid interior (Wang et al. 2004).

Shared by the SSIM metric (metrics/content.py) and the differentiable SSIM loss of SSIM+LSGAN
(losses.py). The computation is torchmetrics'; torchmetrics (1.9) averages its SSIM map over the
reflect-padded border as well, which at 64 px shifts the value by several percent, so we take its
full map and drop the border, as Wang et al.'s reference and scikit-image do.
"""

from __future__ import annotations

from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

WINDOW = {"gaussian_kernel": True, "sigma": 1.5, "kernel_size": 11}
BORDER = WINDOW["kernel_size"] // 2


def ssim_map(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """The SSIM map of each image pair over its valid interior: N x C x (H - 10) x (W - 10)."""
    _, full = structural_similarity_index_measure(x, y, data_range=data_range, reduction="none",
                                                  return_full_image=True, **WINDOW)
    return full[..., BORDER:-BORDER, BORDER:-BORDER]


def ssim_per_image(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Mean SSIM of each image pair (N x C x H x W), channels averaged; differentiable."""
    return ssim_map(x, y, data_range).mean(dim=(1, 2, 3))


def masked_ssim_per_image(x: Tensor, y: Tensor, keep: Tensor, data_range: float = 1.0) -> Tensor:
    """Mean SSIM over the pixels where `keep` (N x 1 x H x W, {0, 1}) is 1, within the valid interior."""
    keep = keep[..., BORDER:-BORDER, BORDER:-BORDER]
    weights = keep.expand(-1, x.shape[1], -1, -1)
    return (ssim_map(x, y, data_range) * weights).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3))
