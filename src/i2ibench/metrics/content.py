"""Content metrics: SSIM, PSNR and LPIPS between a translation and a reference image.

References: the ground truth when the test split is paired (`gt`), the source image itself
(`source`: content preservation), and for mask tasks the source outside its instance masks
(`background`: what a mask-guided method should leave untouched).
Images are compared as saved 8-bit images scaled to [0, 1] (data range 1.0), in float64: SSIM
with the Gaussian 11x11, sigma 1.5 window of Wang et al. 2004 (`i2ibench.ssim`), PSNR per image,
both averaged over images; both equal scikit-image's per image (tests/test_metrics_ssim.py).
LPIPS (Zhang et al. 2018, AlexNet v0.1, the `lpips` package) needs torchvision's ImageNet
AlexNet; where it cannot be had, LPIPS is reported unavailable.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from i2ibench import ssim
from i2ibench.metrics import bootstrap as BS
from i2ibench.metrics.inception import to_uint8
from i2ibench.metrics.suite import IndexedSamples

CONTENT_CARD = {
    "ssim": "Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03, data range 1.0 (8-bit images / 255), "
            "mean over channels and the valid interior (5-pixel border dropped, as scikit-image), then over images; float64",
    "psnr": "per image, data range 1.0 (8-bit images / 255), mean over images; float64",
}


def to_unit(images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """[-1, 1] images -> 8-bit quantised -> [0, 1] (what a saved image would give)."""
    return to_uint8(images).to(dtype).div_(255.0)


def ssim_per_image(x: Tensor, y: Tensor) -> Tensor:
    """SSIM of saved-image equivalents over the valid interior (see `i2ibench.ssim`), in float64:
    float32 loses up to 2.6e-4 on near-white images (sketches) to cancellation in the variances."""
    return ssim.ssim_per_image(to_unit(x, torch.float64), to_unit(y, torch.float64))


def background_metrics(x: Tensor, y: Tensor, masks: Tensor, lpips_model) -> dict[str, Tensor]:
    """SSIM / PSNR / LPIPS outside the union of `masks` (N x 1 x H x W, {0, 1}): background preservation.

    PSNR from the mean squared error over background pixels, SSIM averaged over background pixels of
    its map, LPIPS between the two images with the masked region set to mid-gray in both. An image
    that is all foreground has no background: NaN, left out of the means.
    """
    keep = 1.0 - masks.to(x.dtype)
    unit_x, unit_y = to_unit(x, torch.float64), to_unit(y, torch.float64)
    squared = ((unit_x - unit_y) ** 2 * keep.double()).sum(dim=(1, 2, 3))
    mse = squared / (keep.double().sum(dim=(1, 2, 3)) * x.shape[1])
    values = {"psnr_background": 10 * torch.log10(1.0 / mse),
              "ssim_background": ssim.masked_ssim_per_image(unit_x, unit_y, keep)}
    if lpips_model is not None:
        lpips_model.to(x.device)
        values["lpips_background"] = lpips_model((to_unit(x) * 2 - 1) * keep, (to_unit(y) * 2 - 1) * keep).flatten()
    else:
        values["lpips_background"] = torch.full((len(x),), float("nan"))
    return values


def psnr_per_image(x: Tensor, y: Tensor) -> Tensor:
    """10 log10(1 / MSE) per image in float64 (inf for identical images), as scikit-image computes it."""
    mse = (to_unit(x, torch.float64) - to_unit(y, torch.float64)).square().mean(dim=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse)


DOWNLOAD_TIMEOUT_S = 20  # seconds without an answer before the ImageNet weights' download gives up


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """A default timeout for sockets opened inside (urllib, which torchvision's download uses, sets none)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


@lru_cache(maxsize=4)
def load_lpips(net: str = "alex", random_backbone: bool = False):
    """(LPIPS model or None, description). None comes with the reason it is unavailable.

    `random_backbone` skips the ImageNet download and is only good for testing the plumbing.
    """
    import warnings

    import lpips

    try:
        # Seeded: a random backbone must be the same network in every process and run. torchvision's
        # download has no timeout of its own: on a machine whose network drops packets it hung for
        # minutes per run, so the socket gets one (a cached file needs no network at all).
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]), socket_timeout(DOWNLOAD_TIMEOUT_S):
            warnings.simplefilter("ignore", UserWarning)  # lpips calls torchvision's deprecated `pretrained=`
            torch.manual_seed(0)
            model = lpips.LPIPS(net=net, version="0.1", pnet_rand=random_backbone, verbose=False)
    except Exception as err:  # torchvision's download fails without network access
        return None, (f"LPIPS needs torchvision's ImageNet {net} weights, which could not be loaded "
                      f"({type(err).__name__}: {str(err)[:120]}); put them in torch's hub cache "
                      f"({torch.hub.get_dir()}/checkpoints) to enable LPIPS")
    model.eval().requires_grad_(False)
    description = f"lpips {net} v0.1" + (" with a RANDOM backbone, seed 0 (plumbing test only)" if random_backbone else "")
    return model, description


class ContentMetrics(IndexedSamples):
    """Per-image SSIM / PSNR / LPIPS of translations against each named reference.

    With `diversity`, translations come as N x K x 3 x H x W (K styles per source) and each source
    gets the mean LPIPS over its K (K - 1) / 2 output pairs (StarGAN v2's LPIPS diversity).
    """

    def __init__(self, references: tuple[str, ...], lpips_model=None, sync_device: torch.device | None = None,
                 diversity: bool = False):
        names = tuple(f"{metric}_{ref}" for ref in references for metric in ("ssim", "psnr", "lpips"))
        # float64 per-image values: SSIM / PSNR are computed in float64 and kept so (a few numbers per image)
        super().__init__(names + (("lpips_diversity",) if diversity else ()), sync_device, dtype=torch.float64)
        self.references, self.diversity = references, diversity
        self._lpips = [lpips_model]  # in a list: not a child module, so it is neither synced nor moved

    @torch.no_grad()
    def update(self, index: Tensor, fake: Tensor, background_mask: Tensor | None = None,  # type: ignore[override]
               **references: Tensor) -> None:
        """`references`: the named images to compare with; `background` is compared outside `background_mask`."""
        values = {}
        lpips_model = self._lpips[0]
        if self.diversity:
            values["lpips_diversity"] = self._pairwise_lpips(fake)
            fake = fake[:, 0]  # references (if any) are compared with the first style
        if "background" in self.references:
            values.update(background_metrics(fake, references["background"].to(fake.device),
                                             background_mask.to(fake.device), lpips_model))
        for ref in self.references:
            if ref == "background":
                continue
            target = references[ref].to(fake.device)
            values[f"ssim_{ref}"] = ssim_per_image(fake, target)
            values[f"psnr_{ref}"] = psnr_per_image(fake, target)
            if lpips_model is not None:
                lpips_model.to(fake.device)
                values[f"lpips_{ref}"] = lpips_model(to_unit(fake) * 2 - 1, to_unit(target) * 2 - 1).flatten()
            else:
                values[f"lpips_{ref}"] = torch.full((len(fake),), float("nan"))
        super().update(index, **values)

    def _pairwise_lpips(self, styles: Tensor) -> Tensor:
        """Mean LPIPS over all pairs of each source's K outputs (NaN when LPIPS is unavailable)."""
        lpips_model = self._lpips[0]
        n, k = styles.shape[:2]
        if lpips_model is None or k < 2:
            return torch.full((n,), float("nan"))
        lpips_model.to(styles.device)
        first, second = torch.triu_indices(k, k, offset=1, device=styles.device)
        images = to_unit(styles.flatten(0, 1)).view(n, k, *styles.shape[2:]) * 2 - 1
        distances = lpips_model(images[:, first].flatten(0, 1), images[:, second].flatten(0, 1)).view(n, -1)
        return distances.mean(dim=1)

    def means(self) -> dict[str, float | None]:
        """Mean of each metric over images (None for LPIPS when it is unavailable)."""
        per_image = self.ordered()
        out: dict[str, float | None] = {}
        for name in self.names:
            values = per_image[name]
            out[name] = None if torch.isnan(values).all() else float(values.double().nanmean())
        return out

    def bootstrap(self, resample: BS.Resample) -> dict[str, np.ndarray]:
        """Replicates of each metric's mean over `resample`'s counts of sources (NaN values left out).

        Metrics without any value (LPIPS unavailable) get none.
        """
        per_image = self.ordered()
        if resample.counts.shape[1] != len(per_image["index"]):
            raise ValueError(f"bootstrap: {resample.counts.shape[1]} resampled sources for "
                             f"{len(per_image['index'])} evaluated ones")
        return {name: BS.mean_replicates(per_image[name].numpy(), resample.counts)
                for name in self.names if not torch.isnan(per_image[name]).all()}
