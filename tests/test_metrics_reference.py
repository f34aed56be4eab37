"""The suite's numbers against the reference libraries: torch-fidelity and scikit-image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch_fidelity
from PIL import Image
from scipy.spatial.distance import pdist
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kernel_mmd, kid_features_to_metric

from i2ibench.data.transforms import to_model_range
from i2ibench.metrics import distribution as D
from i2ibench.metrics.content import psnr_per_image, ssim_per_image
from i2ibench.metrics.folder_eval import evaluate_folders
from i2ibench.metrics.suite import DistributionSettings, MetricSuite, distribution_metrics

from conftest import inception_weights

WEIGHTS = inception_weights()
needs_inception = pytest.mark.skipif(WEIGHTS is None, reason="no Inception weights (set I2IBENCH_INCEPTION_WEIGHTS)")


def image_folder(target: Path, sources: list[Path], size: int) -> Path:
    """Real photos (or sketches) resized to size x size and saved as PNG."""
    target.mkdir(parents=True)
    for i, src in enumerate(sources):
        Image.open(src).convert("RGB").resize((size, size), Image.BICUBIC).save(target / f"{i:03d}.png")
    return target


def torch_fidelity_metrics(fake: Path, real: Path, weights: Path, **kwargs) -> dict:
    return torch_fidelity.calculate_metrics(input1=str(fake), input2=str(real), cuda=False, cache=False,
                                            verbose=False, feature_extractor_weights_path=str(weights),
                                            batch_size=8, **kwargs)


@needs_inception
@pytest.mark.slow
@pytest.mark.parametrize("size", [32, 128, 256])
def test_fid_kid_precision_recall_equal_torch_fidelity(tmp_path, builtin_root, size):
    n_real, n_fake, subset = 10, 9, 6
    real = image_folder(tmp_path / "real", sorted((builtin_root / "trainA").iterdir())[:n_real], size)
    fake = image_folder(tmp_path / "fake", sorted((builtin_root / "trainB").iterdir())[:n_fake], size)
    # KID on subsets smaller than both sets, with both libraries' default seed: the same draws.
    ours = evaluate_folders(real, fake, settings=DistributionSettings(kid_subset_size=subset, kid_subsets=5),
                            weights=str(WEIGHTS), lpips="off", batch_size=4)["metrics"]["images"]
    # torch-fidelity's P/R default to VGG-16 features; the suite uses its one Inception pass.
    theirs = torch_fidelity_metrics(fake, real, WEIGHTS, fid=True, kid=True, prc=True, kid_subset_size=subset,
                                    kid_subsets=5, feature_extractor="inception-v3-compat", feature_layer_prc="2048")
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    # torch-fidelity evaluates the kernel on float32 features, the suite in float64
    assert ours["kid_mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    assert ours["kid_std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-3)
    # the same points inside the same balls; torch-fidelity averages them in float32
    assert ours["precision"] == pytest.approx(theirs["precision"], abs=1e-6)
    assert ours["recall"] == pytest.approx(theirs["recall"], abs=1e-6)
    assert ours["fid"] > 1.0  # photos vs sketches: a real distance, not a trivial zero


@needs_inception
@pytest.mark.slow
def test_inception_score_equals_torch_fidelity_with_a_classifier(tmp_path, builtin_root):
    """The shared weights have no classifier; give them a random one to compare the IS plumbing."""
    state = torch.load(WEIGHTS, weights_only=True)
    generator = torch.Generator().manual_seed(0)
    state["fc.weight"] = torch.randn(state["fc.weight"].shape, generator=generator) * 0.05
    state["fc.bias"] = torch.randn(state["fc.bias"].shape, generator=generator) * 0.05
    weights = tmp_path / "with-classifier.pth"
    torch.save(state, weights)
    fake = image_folder(tmp_path / "fake", sorted((builtin_root / "trainA").iterdir())[:9], 64)
    real = image_folder(tmp_path / "real", sorted((builtin_root / "trainB").iterdir())[:8], 64)
    # default seeds on both sides; 9 images in 2 splits: unequal splits
    ours = evaluate_folders(real, fake, settings=DistributionSettings(is_splits=2), weights=str(weights), lpips="off")
    theirs = torch_fidelity_metrics(fake, real, weights, isc=True, isc_splits=2)
    assert "is" not in ours["unavailable"]["images"]
    assert ours["metrics"]["images"]["is_mean"] == pytest.approx(theirs["inception_score_mean"], rel=1e-5)
    assert ours["metrics"]["images"]["is_std"] == pytest.approx(theirs["inception_score_std"], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("n_real, n_fake", [(10, 12), (300, 200), (2100, 2100)])
def test_fid_from_features_equals_torch_fidelity_statistics(n_real, n_fake):
    """The small-set SVD route and torch-fidelity's eigenvalue route give the same FID (full rank too)."""
    generator = torch.Generator().manual_seed(n_real)
    scale = torch.rand(2048, generator=generator) * 2
    real = torch.randn(n_real, 2048, generator=generator) * scale
    fake = torch.randn(n_fake, 2048, generator=generator) * scale.flip(0) + 0.1
    reference = D.frechet_distance(D.gaussian_statistics(real), D.gaussian_statistics(fake))
    assert D.frechet_distance_from_features(real, fake) == pytest.approx(reference, rel=1e-6)
    assert D.frechet_distance_from_features(real, fake, max_product=0) == pytest.approx(reference, rel=1e-12)


def test_gaussian_mmd_equals_torch_fidelity_rbf_kernel():
    generator = torch.Generator().manual_seed(1)
    real = torch.randn(40, 16, generator=generator)
    fake = torch.randn(40, 16, generator=generator) * 1.3 + 0.2
    bandwidth = 4.0
    reference = kernel_mmd(real.double().numpy(), fake.double().numpy(), kid_kernel="rbf",
                           kid_kernel_rbf_sigma=bandwidth)
    assert D.gaussian_mmd2(real, fake, bandwidth, block=7) == pytest.approx(reference, rel=1e-10)


def test_median_bandwidth_equals_scipy():
    features = torch.randn(60, 8, generator=torch.Generator().manual_seed(2))
    assert D.median_distance(features, 1000, seed=0) == pytest.approx(np.median(pdist(features.double().numpy())))


def test_kid_with_one_full_subset_equals_torch_fidelity_kernel():
    generator = torch.Generator().manual_seed(3)
    real, fake = torch.randn(30, 64, generator=generator), torch.randn(30, 64, generator=generator) + 0.1
    mean, std = D.kernel_inception_distance(real, fake, subset_size=30, subsets=1, seed=0)
    assert mean == pytest.approx(kernel_mmd(real.double().numpy(), fake.double().numpy()), rel=1e-12)
    assert std == 0.0


def feature_sets(n_real: int, n_fake: int, dim: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sets of features far enough apart that each subset's MMD differs from the next."""
    generator = torch.Generator().manual_seed(n_real * 1000 + n_fake)
    real = torch.randn(n_real, dim, generator=generator)
    fake = torch.randn(n_fake, dim, generator=generator) * (1 + torch.rand(dim, generator=generator)) + 0.3
    return real, fake


@pytest.mark.parametrize("n_real, n_fake, subset_size", [
    (40, 40, 9),      # subsets smaller than N
    (50, 23, 11),     # sets of different sizes, both subsampled
    (37, 16, None),   # the default subset size min(1000, N_real, N_fake): only the larger set subsampled
])
def test_kid_subsets_are_torch_fidelitys(n_real, n_fake, subset_size):
    """The suite's KID (defaults: seed, subset draws) equals torch-fidelity's `kid_features_to_metric`
    on the same features, input1 = fake as torch-fidelity's command line takes it."""
    real, fake = feature_sets(n_real, n_fake)
    settings = DistributionSettings(kid_subset_size=subset_size, kid_subsets=7)
    ours, _ = distribution_metrics(real, fake, settings)
    size = subset_size or min(n_real, n_fake)
    # float64 features: torch-fidelity then evaluates the kernel in float64 too, and the numbers are the same
    theirs = kid_features_to_metric(fake.double(), real.double(), kid_subsets=7, kid_subset_size=size, verbose=False)
    assert ours["kid_subset_size"] == size
    assert ours["kid_mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-12)
    assert ours["kid_std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-10)
    assert ours["kid_std"] > 1e-3 * abs(ours["kid_mean"])  # the subsets really differ


@pytest.mark.parametrize("n, splits", [(23, 3), (50, 10), (31, 4)])
def test_inception_score_splits_are_torch_fidelitys(n, splits):
    """IS from the suite's per-split sums (samples arriving out of order, in two batches) equals
    torch-fidelity's `isc_features_to_metric` on the same logits: its shuffle (seed 2020) and split
    boundaries i N / splits, with N not divisible by the splits."""
    generator = torch.Generator().manual_seed(n)
    logits = torch.randn(n, 1008, generator=generator) * 4
    suite = MetricSuite(DistributionSettings(is_splits=splits, kid_subsets=1), expected_count=n)
    order = torch.randperm(n, generator=generator)
    for part in order.tensor_split(2):
        suite.update(part, features=torch.randn(len(part), 8, generator=generator), logits=logits[part])
    ours, unavailable = suite.score(torch.randn(n, 8, generator=generator))
    theirs = isc_features_to_metric(logits, splits=splits)
    assert "is" not in unavailable
    assert ours["is_mean"] == pytest.approx(theirs["inception_score_mean"], rel=1e-12)
    assert ours["is_std"] == pytest.approx(theirs["inception_score_std"], rel=1e-9, abs=1e-12)


def unit_images(paths: list[Path]) -> tuple[torch.Tensor, np.ndarray]:
    arrays = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    tensors = torch.stack([to_model_range(Image.fromarray(a)) for a in arrays])
    return tensors, arrays.astype(np.float64) / 255.0


def test_ssim_and_psnr_agree_with_scikit_image(builtin_root):
    """Photos vs their own sketches (the built-in paired test split)."""
    names = sorted(p.name for p in (builtin_root / "testA").iterdir())[:6]
    x, x_np = unit_images([builtin_root / "testA" / n for n in names])
    y, y_np = unit_images([builtin_root / "testB" / n for n in names])
    ours_ssim, ours_psnr = ssim_per_image(x, y), psnr_per_image(x, y)
    for i in range(len(names)):
        ssim = structural_similarity(x_np[i], y_np[i], channel_axis=2, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=1.0)
        assert float(ours_ssim[i]) == pytest.approx(ssim, abs=1e-4)
        # 1e-6: torchmetrics forms its 10 / ln(10) factor in float32 (a 5e-8 relative difference).
        assert float(ours_psnr[i]) == pytest.approx(peak_signal_noise_ratio(x_np[i], y_np[i], data_range=1.0),
                                                    rel=1e-6)
    assert 0.0 < float(ours_ssim.mean()) < 0.9


@needs_inception
@pytest.mark.slow
def test_results_do_not_depend_on_batch_size(tmp_path, builtin_root):
    real = image_folder(tmp_path / "real", sorted((builtin_root / "trainA").iterdir())[:11], 48)
    fake = image_folder(tmp_path / "fake", sorted((builtin_root / "trainB").iterdir())[:11], 48)
    settings = DistributionSettings(kid_subsets=20)
    runs = [evaluate_folders(real, fake, settings=settings, weights=str(WEIGHTS), lpips="off",
                             batch_size=batch)["metrics"]["images"] for batch in (3, 11)]
    for name, value in runs[0].items():
        if isinstance(value, float):
            assert value == pytest.approx(runs[1][name], rel=1e-5, abs=1e-9), name
