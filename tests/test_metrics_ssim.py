"""SSIM and PSNR per image against scikit-image, on near-white sketches where float32 fails.

CUFS sketches are mostly paper white: the local variance E[x^2] - E[x]^2 then cancels in float32
(per-image errors up to 2.6e-4, SSIM(x, x) = 0.99974 before the metric moved to float64).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from i2ibench.data.transforms import to_model_range
from i2ibench.metrics.content import background_metrics, psnr_per_image, ssim_per_image

from conftest import SHARED_DATASETS, needs_shared_data

CUFS_TEST = SHARED_DATASETS / "cufs-student" / "CUHK_student_test"
N_IMAGES = 8


def load(paths: list[Path]) -> tuple[torch.Tensor, np.ndarray]:
    """Images as the suite sees them ([-1, 1] tensors) and as scikit-image does (float64 in [0, 1])."""
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    return torch.stack([to_model_range(Image.fromarray(a)) for a in arrays]), np.stack(arrays) / 255.0


def skimage_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """The settings the suite claims (README, CONTENT_CARD): Wang et al.'s Gaussian window."""
    return structural_similarity(x, y, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=1.0)


@pytest.fixture(scope="module")
def sketches_and_photos() -> tuple:
    names = sorted(p.name for p in (CUFS_TEST / "sketches").iterdir())[:N_IMAGES]
    sketches = load([CUFS_TEST / "sketches" / n for n in names])
    photos = load([CUFS_TEST / "photos" / n for n in names])
    # a near-copy of each sketch (+-1 grey level here and there): SSIM near 1, where cancellation bites hardest
    noise = np.random.default_rng(0).integers(-1, 2, size=sketches[1].shape)
    near = np.clip(np.rint(sketches[1] * 255) + noise, 0, 255).astype(np.uint8)
    near_copies = (torch.stack([to_model_range(Image.fromarray(a)) for a in near]), near / 255.0)
    return sketches, photos, near_copies


@needs_shared_data
def test_ssim_equals_scikit_image_per_image_on_near_white_sketches(sketches_and_photos):
    (sketch, sketch_np), (photo, photo_np), (near, near_np) = sketches_and_photos
    assert sketch_np.mean() > 0.7  # the hard case: mostly white
    for other, other_np in ((photo, photo_np), (near, near_np)):
        ours = ssim_per_image(sketch, other)
        assert ours.dtype == torch.float64
        for i in range(N_IMAGES):
            assert float(ours[i]) == pytest.approx(skimage_ssim(sketch_np[i], other_np[i]), abs=1e-8), i


@needs_shared_data
def test_ssim_of_an_image_with_itself_is_one(sketches_and_photos):
    (sketch, _), (photo, _), _ = sketches_and_photos
    for images in (sketch, photo):
        assert torch.allclose(ssim_per_image(images, images), torch.ones(N_IMAGES, dtype=torch.float64),
                              rtol=0, atol=1e-12)
    # outside masks too: the background SSIM of an untouched image is 1 wherever the window sees only background
    keep_all = torch.zeros(N_IMAGES, 1, *sketch.shape[-2:])
    background = background_metrics(sketch, sketch, keep_all, lpips_model=None)
    assert torch.allclose(background["ssim_background"], torch.ones(N_IMAGES, dtype=torch.float64), rtol=0, atol=1e-12)


@needs_shared_data
def test_psnr_equals_scikit_image_per_image(sketches_and_photos):
    (sketch, sketch_np), (photo, photo_np), (near, near_np) = sketches_and_photos
    for other, other_np in ((photo, photo_np), (near, near_np)):
        ours = psnr_per_image(sketch, other)
        for i in range(N_IMAGES):
            assert float(ours[i]) == pytest.approx(peak_signal_noise_ratio(sketch_np[i], other_np[i], data_range=1.0),
                                                   rel=1e-12), i
