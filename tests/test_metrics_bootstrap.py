"""Bootstrap intervals over the evaluated images, against independent computations on fixed features.

Independent: a plain loop over the same seeded resample indices that recomputes each metric on the
resampled feature rows with scipy / numpy / torch-fidelity (FID by scipy.linalg.sqrtm, KID and the
MMDs by explicit kernel matrices with the duplicated pairs named), never through `metrics.bootstrap`.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

from i2ibench.metrics import bootstrap as BS
from i2ibench.metrics import distribution as D
from i2ibench.metrics import two_sample as TS
from i2ibench.metrics.content import ContentMetrics
from i2ibench.metrics.suite import DistributionSettings, MetricSuite


def features(n_real: int = 40, n_fake: int = 30, dim: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inception-like features: non-negative, correlated, the fake set shifted; fewer samples than dims."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.rand(dim, dim, generator=generator) / dim
    real = torch.relu(torch.randn(n_real, dim, generator=generator) @ mixing * 4 + 0.3)
    fake = torch.relu(torch.randn(n_fake, dim, generator=generator) @ mixing * 4 + 0.4)
    return real, fake


def scipy_fid(real: np.ndarray, fake: np.ndarray) -> float:
    """The textbook FID: means, np.cov, scipy.linalg.sqrtm of the d x d product."""
    mu_r, mu_f = real.mean(0), fake.mean(0)
    sigma_r, sigma_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = scipy.linalg.sqrtm(sigma_r @ sigma_f)
    return float(((mu_r - mu_f) ** 2).sum() + np.trace(sigma_r) + np.trace(sigma_f) - 2 * np.trace(root).real)


def test_resamples_are_seeded_by_seed_and_task():
    a = BS.resample_indices(20, 50, 2020, "A2B")
    assert np.array_equal(a, BS.resample_indices(20, 50, 2020, "A2B"))
    assert not np.array_equal(a, BS.resample_indices(20, 50, 2020, "B2A"))
    assert not np.array_equal(a, BS.resample_indices(20, 50, 2021, "A2B"))
    counts = BS.counts_from_indices(a, 20)
    assert counts.sum(1).tolist() == [20] * 50
    assert all(np.array_equal(np.bincount(a[b], minlength=20), counts[b]) for b in range(50))


@pytest.mark.parametrize("n_fake", [30, 60])  # fewer and more fake samples than feature dimensions (48)
def test_fid_replicates_equal_scipy_sqrtm_on_each_resampled_set(n_fake):
    """The u x u eigenvalue identity against the full d x d computation on resamples with duplicates,
    where an error in the weighting would show: scipy's sqrtm of S_r S_f (accurate to ~1e-7 here: the
    product is rank-deficient, where sqrtm loses half its digits) and the exact SVD form."""
    real, fake = features(n_fake=n_fake)
    indices = BS.resample_indices(n_fake, 6, 7, "A2B")
    counts = BS.counts_from_indices(indices, n_fake)
    ours = BS.frechet_replicates(real, fake, counts)
    for b in range(len(indices)):
        rows = fake.double().numpy()[indices[b]]
        assert ours[b] == pytest.approx(scipy_fid(real.double().numpy(), rows), rel=1e-6), b
        exact = D.frechet_distance_from_features(real.double(), torch.from_numpy(rows))
        assert ours[b] == pytest.approx(exact, rel=1e-7), b


def test_fid_small_path_equals_torch_fidelity_and_the_large_path(monkeypatch):
    """All counts 1 (the evaluated set itself): torch-fidelity's statistics-to-metric; and the u x u and
    d x d paths give the same replicates."""
    real, fake = features()
    stats = [{"mu": x.double().numpy().mean(0), "sigma": np.cov(x.double().numpy(), rowvar=False)} for x in (real, fake)]
    theirs = float(fid_statistics_to_metric(stats[0], stats[1], verbose=False)[KEY_METRIC_FID])
    whole = BS.frechet_replicates(real, fake, np.ones((1, len(fake)), dtype=np.int64))[0]
    assert whole == pytest.approx(theirs, rel=1e-6)  # sqrtm of a rank-deficient product: ~1e-7
    assert whole == pytest.approx(D.frechet_distance_from_features(real, fake), rel=1e-7)
    # The d x d path serves sets larger than the feature dimension: full-rank covariances, as here.
    real, fake = features(n_real=80, n_fake=70, dim=24)
    counts = BS.Resample.draw(len(fake), 5, 1, "t").counts
    small = BS.frechet_replicates(real, fake, counts)
    monkeypatch.setattr(BS, "FID_GRAM_MAX_ROWS", 1)
    assert BS.frechet_replicates(real, fake, counts) == pytest.approx(small, rel=1e-9)


def kernel_matrix(x: np.ndarray, y: np.ndarray, kind: str, gamma: float | None = None) -> np.ndarray:
    if kind == "polynomial":
        return (x @ y.T / x.shape[1] + 1.0) ** 3
    squared = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return np.exp(-gamma * squared)


def loop_unbiased_mmd2(real: np.ndarray, fake_rows: np.ndarray, fake: np.ndarray, kind: str, gamma=None) -> float:
    """Unbiased MMD^2 of fake[fake_rows] (with duplicates) against real: fake-fake pairs of two copies of
    the same image (or of a position with itself) are left out, written as a plain double loop."""
    k_ff = kernel_matrix(fake, fake, kind, gamma)
    total, pairs = 0.0, 0
    for p in fake_rows:
        for q in fake_rows:
            if p != q:
                total += k_ff[p, q]
                pairs += 1
    k_rr = kernel_matrix(real, real, kind, gamma)
    m = len(real)
    real_within = (k_rr.sum() - np.trace(k_rr)) / (m * (m - 1))
    cross = kernel_matrix(fake[fake_rows], real, kind, gamma).mean()
    return real_within + total / pairs - 2 * cross


def test_kernel_mmd_replicates_equal_a_plain_loop_over_the_same_indices():
    real, fake = features(n_real=25, n_fake=20, dim=16)
    indices = BS.resample_indices(20, 4, 3, "A2B")
    counts = BS.counts_from_indices(indices, 20)
    bandwidth = D.median_distance(real, 2000, 2020)
    scale = TS.mean_squared_distance(real)
    ours = BS.distribution_replicates(real, fake, counts, bandwidth, scale)
    r, f = real.double().numpy(), fake.double().numpy()
    for b in range(4):
        assert ours["kid_mean"][b] == pytest.approx(loop_unbiased_mmd2(r, indices[b], f, "polynomial"), rel=1e-10)
        gamma = 1 / (2 * bandwidth**2)
        assert ours["kernel_mmd2"][b] == pytest.approx(loop_unbiased_mmd2(r, indices[b], f, "gaussian", gamma),
                                                       rel=1e-9, abs=1e-14)
        # MMD(Xu) of the resampled multiset: two_sample's own function on the duplicated rows
        assert ours["mmd_xu"][b] == pytest.approx(TS.mmd_xu(real, fake[torch.from_numpy(indices[b])]).mmd, rel=1e-9)
        assert ours["fid"][b] == pytest.approx(scipy_fid(r, f[indices[b]]), rel=1e-6)
    # All counts 1: the point estimates the suite reports (KID with one subset of the whole sets).
    ones = np.ones((1, 20), dtype=np.int64)
    same = BS.distribution_replicates(real[:20], fake, ones, bandwidth, scale)
    assert same["kid_mean"][0] == pytest.approx(D.kernel_inception_distance(real[:20], fake, 20, 1)[0], rel=1e-10)
    assert same["kernel_mmd2"][0] == pytest.approx(D.gaussian_mmd2(real[:20], fake, bandwidth), rel=1e-9)


def test_percentile_interval_is_the_order_statistics_outside_the_level():
    values = np.arange(1000, dtype=np.float64)[::-1]
    assert BS.percentile_interval(values, 0.95) == [24.0, 975.0]  # numpy's "lower" / "higher" quantiles
    assert BS.percentile_interval(np.array([1.0, np.inf, np.inf, 2.0]), 0.5) == [1.0, np.inf]
    assert BS.percentile_interval(np.array([1.0, np.nan])) is None
    # re-centred on the value: shifted by value - median (the "lower" median, 499 here)
    assert BS.percentile_interval(values, 0.95, value=500.0) == [25.0, 976.0]
    assert BS.percentile_interval(np.array([1.0, 2.0, 3.0]), 0.5, value=np.inf) == [1.0, 3.0]  # no shift by inf
    packed = BS.encode_replicates(np.array([1.5, -2.25, 3.0]))
    assert BS.decode_replicates(packed).tolist() == [1.5, -2.25, 3.0]


def test_content_mean_replicates_move_all_outputs_of_a_source_together_and_skip_nan():
    values = np.array([0.1, np.nan, 0.5, 0.9, 0.3])
    indices = BS.resample_indices(5, 20, 0, "x")
    counts = BS.counts_from_indices(indices, 5)
    ours = BS.mean_replicates(values, counts)
    for b in range(20):
        expected = np.nanmean(values[indices[b]]) if not np.isnan(values[indices[b]]).all() else np.nan
        assert ours[b] == pytest.approx(expected, nan_ok=True)
    # Two styles per source: images 2s, 2s+1 belong to source s and get its count.
    resample = BS.Resample(counts, styles=2)
    assert np.array_equal(resample.image_counts[:, 0::2], counts) and np.array_equal(resample.image_counts[:, 1::2], counts)


def test_suite_and_content_bootstrap_use_the_same_resamples_on_index_ordered_samples():
    """Samples arriving out of order: the bootstrap resamples the dataset order, and a plain loop over
    the drawn sources reproduces the suite's FID and the content means. 3 sources x 2 styles."""
    real, fake = features(n_real=20, n_fake=12, dim=16)
    settings = DistributionSettings(kid_subsets=2, is_splits=1, bootstrap_resamples=40)
    suite = MetricSuite(settings, is_unavailable="not tested")
    content = ContentMetrics(("source",), None)
    per_source = torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0, 1.2], dtype=torch.float64)
    order = torch.tensor([5, 0, 3, 1, 4, 2])
    for part in order.tensor_split(2):
        images = torch.cat([part * 2, part * 2 + 1])
        suite.update(images, features=fake[images])
        # ContentMetrics.update computes values from images; feed per-source values through the base state
        super(ContentMetrics, content).update(part, ssim_source=per_source[part], psnr_source=per_source[part] * 10,
                                              lpips_source=torch.full((len(part),), float("nan")))
    metrics, _ = suite.score(real)
    resample = BS.Resample.draw(6, 40, settings.seed, "A2B", styles=2)
    distribution = suite.bootstrap(real, resample, metrics)
    means = content.bootstrap(resample)
    assert "lpips_source" not in means  # no values, no replicates
    indices = BS.resample_indices(6, 40, settings.seed, "A2B")
    for b in range(3):
        rows = np.concatenate([[2 * s, 2 * s + 1] for s in indices[b]])
        assert distribution["fid"][b] == pytest.approx(scipy_fid(real.double().numpy(), fake.double().numpy()[rows]),
                                                       rel=1e-6)
        assert means["ssim_source"][b] == pytest.approx(per_source.numpy()[indices[b]].mean())


def test_the_fid_interval_is_centred_on_the_value_that_its_replicates_overshoot():
    """FID of a resample (~63% distinct images) is biased above the evaluated set's FID. The recorded
    interval is re-centred on the value (shifted by value - median) and keeps the replicates' spread."""
    real, fake = features()
    value = D.frechet_distance_from_features(real, fake)
    counts = BS.Resample.draw(len(fake), 200, 0, "A2B").counts
    replicates = BS.frechet_replicates(real, fake, counts)
    median = np.quantile(replicates, 0.5, method="lower")
    assert median > value  # the offset being corrected
    entries = BS.record_entries({"fid": replicates, "kid_mean": replicates}, {"fid": value, "kid_mean": None})
    low, high = entries["intervals"]["fid"]
    assert low < value < high
    assert low == pytest.approx(np.quantile(replicates, 0.025, method="lower") + value - median)
    assert high - low == pytest.approx(np.quantile(replicates, 0.975, method="higher")
                                       - np.quantile(replicates, 0.025, method="lower"))
    assert "kid_mean" not in entries["intervals"] and "kid_mean" not in entries["bootstrap_replicates"]
    assert np.allclose(BS.decode_replicates(entries["bootstrap_replicates"]["fid"]), replicates, rtol=1e-6)


@pytest.mark.slow
def test_the_evaluator_records_intervals_and_replicates_of_each_task_and_names_the_bootstrap_in_its_card():
    """Wiring, with the real Inception on tiny images: a two-domain task (content against the source) and a
    multi-style task (3 sources x 2 styles, in two batches). Each task's replicates are those of its own
    seeded resamples of SOURCES (both styles of a source together), recomputed here from the suite's
    features; existing keys are unchanged."""
    from conftest import inception_weights

    from i2ibench.metrics.evaluator import Evaluator

    weights = inception_weights()
    if weights is None:
        pytest.skip("no Inception weights")
    settings = DistributionSettings(kid_subsets=2, is_splits=1, bootstrap_resamples=30)
    evaluator = Evaluator(weights, settings, lpips="off")
    multi = "cat->dog@latent"
    evaluator.begin({"A2B": ("source",), multi: ()}, {"A2B": 4, multi: 6}, diversity=(multi,))
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 32, 32, generator=generator) * 2 - 1
    evaluator.update("A2B", torch.arange(4), images, source=torch.rand(4, 3, 32, 32, generator=generator) * 2 - 1)
    styles = torch.rand(3, 2, 3, 32, 32, generator=generator) * 2 - 1
    evaluator.update(multi, torch.tensor([2]), styles[2:])
    evaluator.update(multi, torch.tensor([0, 1]), styles[:2])
    real = evaluator.extractor(((torch.rand(5, 3, 32, 32, generator=generator)) * 255).to(torch.uint8))[0]
    metrics, _ = evaluator.finish({"A2B": real, multi: real})
    assert evaluator.timings["bootstrap_s"] > 0
    a2b, styled = metrics["A2B"], metrics[multi]
    assert {"fid", "kid_mean", "ssim_source", "psnr_source", "n_fake"} <= set(a2b)  # the existing keys
    assert {"fid", "kid_mean", "kernel_mmd2", "mmd_xu", "ssim_source", "psnr_source"} <= set(a2b["intervals"])
    assert "lpips_source" not in a2b["intervals"]  # LPIPS off: no value, no interval
    assert styled["n_fake"] == 6 and set(styled["intervals"]) == {"fid", "kid_mean", "kernel_mmd2", "mmd_xu"}
    fake = evaluator.suites[multi].ordered()["features"]
    counts = BS.Resample.draw(3, 30, settings.seed, multi, styles=2).image_counts
    expected = BS.frechet_replicates(real, fake, counts)
    stored = BS.decode_replicates(styled["bootstrap_replicates"]["fid"])
    assert np.allclose(stored, expected, rtol=1e-6)  # float32 storage
    assert styled["bootstrap_replicates"]["resampled"] == f"task {multi}, seed 2020, 30 resamples of 3 sources x 2 outputs"
    low, high = styled["intervals"]["fid"]
    assert low <= styled["fid"] <= high
    card = evaluator.card(32)
    assert card["bootstrap_resamples"] == 30 and card["bootstrap_level"] == 0.95 and card["seed"] == settings.seed
    assert "EVALUATED images" in card["bootstrap"] and "real set stays fixed" in card["bootstrap"]
