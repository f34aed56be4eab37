"""Wasserstein (EMD), 1-NN accuracy and Xu et al.'s kernel MMD against independent computations.

References: POT's `ot.emd2` on scipy's Euclidean distances, scipy's `linear_sum_assignment`,
a brute-force leave-one-out 1-NN written with loops and np.argmin, and a plain numpy MMD
written from the definition in Xu et al.'s code.
"""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from i2ibench.metrics import two_sample as T

DIM = 2048  # Inception pool3


def inception_like(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """Non-negative, sparse-ish float32 features like pool3's (average-pooled ReLU outputs)."""
    rng = np.random.RandomState(seed)
    scale = np.random.RandomState(99).uniform(0.1, 1.0, DIM)  # shared per-dimension spread
    return torch.from_numpy(np.maximum(rng.randn(n, DIM) * scale + 0.2 + shift, 0.0).astype(np.float32))


def gaussian(n: int, seed: int, shift: float = 0.0, dim: int = 16) -> torch.Tensor:
    return torch.from_numpy(np.random.RandomState(seed).randn(n, dim) + shift)


# --- earth mover's distance ---------------------------------------------------------------------

def test_emd_equals_pot_on_scipy_euclidean_costs():
    real, fake = inception_like(60, 0), inception_like(45, 1, shift=0.05)  # unequal N
    x, y = real.double().numpy(), fake.double().numpy()
    expected = ot.emd2(np.full(60, 1 / 60), np.full(45, 1 / 45), cdist(x, y, "euclidean"), numItermax=10**7)
    assert T.earth_movers_distance(real, fake) == pytest.approx(expected, rel=1e-10)
    # the ground cost is the distance, not its square
    squared = ot.emd2(np.full(60, 1 / 60), np.full(45, 1 / 45), cdist(x, y, "sqeuclidean"), numItermax=10**7)
    assert T.earth_movers_distance(real, fake) != pytest.approx(squared, rel=1e-3)


def test_emd_equals_mean_optimal_assignment_at_equal_n():
    # With N points and weights 1/N on each side, an optimal plan is a permutation (Birkhoff):
    # the EMD is the mean matched Euclidean distance of the optimal assignment.
    real, fake = inception_like(80, 2), inception_like(80, 3, shift=0.1)
    cost = cdist(real.double().numpy(), fake.double().numpy(), "euclidean")
    rows, cols = linear_sum_assignment(cost)
    assert T.earth_movers_distance(real, fake) == pytest.approx(cost[rows, cols].mean(), rel=1e-10)


def test_emd_that_stops_early_raises():
    real, fake = gaussian(40, 0), gaussian(40, 1, shift=0.5)
    with pytest.raises(T.EMDNotOptimalError, match="did not reach the optimum"):
        T.earth_movers_distance(real, fake, max_iterations=2)


def test_wasserstein_subsample_is_seeded_and_recorded():
    real, fake = gaussian(50, 4), gaussian(40, 5, shift=0.3)
    result = T.wasserstein_distance(real, fake, max_samples=30, seed=7)
    assert (result.n_real, result.n_fake) == (30, 30)
    rng = np.random.RandomState(7)  # the documented draws: real first, then fake, one RandomState
    real_rows, fake_rows = rng.choice(50, 30, replace=False), rng.choice(40, 30, replace=False)
    cost = cdist(real.numpy()[real_rows], fake.numpy()[fake_rows], "euclidean")
    rows, cols = linear_sum_assignment(cost)
    assert result.distance == pytest.approx(cost[rows, cols].mean(), rel=1e-10)
    assert T.wasserstein_distance(real, fake, max_samples=30, seed=7) == result  # reproducible
    assert T.wasserstein_distance(real, fake, max_samples=30, seed=8).distance != result.distance


def test_wasserstein_caps_each_set_on_its_own():
    real, fake = gaussian(50, 4), gaussian(20, 5)
    result = T.wasserstein_distance(real, fake, max_samples=30, seed=7)
    assert (result.n_real, result.n_fake) == (30, 20)
    whole = T.wasserstein_distance(real, fake, max_samples=50, seed=7)  # nothing over the cap
    assert (whole.n_real, whole.n_fake) == (50, 20)
    assert whole.distance == pytest.approx(T.earth_movers_distance(real, fake), rel=1e-12)


# --- 1-NN two-sample accuracy --------------------------------------------------------------------

def brute_force_1nn(real: np.ndarray, fake: np.ndarray) -> tuple[float, float, float]:
    """Leave-one-out 1-NN, one point at a time: label of np.argmin over the pooled [real, fake]."""
    pooled = np.concatenate([real, fake]).astype(np.float64)
    labels = np.array([1] * len(real) + [0] * len(fake))
    correct = np.zeros(len(pooled), dtype=bool)
    for i in range(len(pooled)):
        distances = np.sqrt(((pooled - pooled[i]) ** 2).sum(axis=1))
        distances[i] = np.inf
        correct[i] = labels[np.argmin(distances)] == labels[i]
    return correct.mean(), correct[:len(real)].mean(), correct[len(real):].mean()


@pytest.mark.parametrize("make, shift", [(inception_like, 0.03), (gaussian, 0.7)])
def test_1nn_equals_brute_force(make, shift):
    real, fake = make(70, 10), make(50, 11, shift=shift)
    expected = brute_force_1nn(real.numpy(), fake.numpy())
    assert 0.0 < expected[1] < 1.0 and 0.0 < expected[2] < 1.0  # a case with both kinds of error
    result = T.nearest_neighbour_accuracy(real, fake)
    assert (result.accuracy, result.real, result.fake) == pytest.approx(expected, abs=1e-12)


def test_1nn_identical_sets_score_zero():
    # Each point's nearest other point is its twin in the other set, at distance 0: every point
    # is misclassified. (Below 0.5 means the fakes copy the reals.)
    real = inception_like(40, 12)
    result = T.nearest_neighbour_accuracy(real, real.clone())
    assert (result.accuracy, result.real, result.fake) == (0.0, 0.0, 0.0)
    assert brute_force_1nn(real.numpy(), real.numpy()) == (0.0, 0.0, 0.0)


def test_1nn_separated_sets_score_one():
    result = T.nearest_neighbour_accuracy(gaussian(30, 13), gaussian(40, 14, shift=100.0))
    assert (result.accuracy, result.real, result.fake) == (1.0, 1.0, 1.0)


def test_1nn_tie_goes_to_the_real_neighbour():
    # Small integers: every distance is exact, so the ties are real ties.
    a, b = [0.0, 0.0, 0.0], [1.0, 2.0, 2.0]
    real, fake = torch.tensor([a, a, b]), torch.tensor([a, b])
    # real a, a: nearest real (the twin, 0) ties the nearest fake (0) -> real, correct.
    # real b: fake b at 0, nearest real 3 away -> wrong. fake a, fake b: a real at 0 -> wrong.
    result = T.nearest_neighbour_accuracy(real, fake)
    assert (result.real, result.fake) == (2 / 3, 0.0)
    assert (result.accuracy, result.real, result.fake) == pytest.approx(brute_force_1nn(real.numpy(), fake.numpy()))


# --- Xu et al.'s kernel MMD -------------------------------------------------------------------------

def numpy_mmd_xu(real: np.ndarray, fake: np.ndarray, sigma: float = 1.0) -> float:
    """Xu et al.'s definition, plainly: squared distances, s = mean real-real one, biased means, sqrt."""
    dxx, dxy, dyy = (cdist(p, q, "sqeuclidean") for p, q in ((real, real), (real, fake), (fake, fake)))
    scale = dxx.mean()
    kxx, kxy, kyy = (np.exp(-d / (scale * 2 * sigma * sigma)) for d in (dxx, dxy, dyy))
    return float(np.sqrt(max(kxx.mean() + kyy.mean() - 2 * kxy.mean(), 0.0)))


@pytest.mark.parametrize("sigma", [1.0, 0.5])
def test_mmd_xu_equals_numpy_definition(sigma):
    real, fake = inception_like(60, 20), inception_like(45, 21, shift=0.02)
    x, y = real.double().numpy(), fake.double().numpy()
    result = T.mmd_xu(real, fake, sigma=sigma)
    assert result.scale == pytest.approx(cdist(x, x, "sqeuclidean").mean(), rel=1e-10)
    assert result.mmd == pytest.approx(numpy_mmd_xu(x, y, sigma), rel=1e-8)
    assert result.mmd > 0.01


def test_mmd_xu_is_zero_for_identical_sets():
    real = inception_like(30, 22)
    assert T.mmd_xu(real, real.clone()).mmd < 1e-6


# --- independence of row order and block size -----------------------------------------------------

def all_scores(real: torch.Tensor, fake: torch.Tensor) -> list[float]:
    nn, mmd = T.nearest_neighbour_accuracy_and_mmd_xu(real, fake)
    return [T.wasserstein_distance(real, fake).distance, nn.accuracy, nn.real, nn.fake, mmd.mmd, mmd.scale]


def test_scores_independent_of_row_order_and_block_size(monkeypatch):
    real, fake = inception_like(70, 30), inception_like(55, 31, shift=0.03)
    reference = all_scores(real, fake)
    g = torch.Generator().manual_seed(0)
    permuted = all_scores(real[torch.randperm(70, generator=g)], fake[torch.randperm(55, generator=g)])
    assert permuted == pytest.approx(reference, rel=1e-10)
    # several tiles per set, mirrored ones and ragged edges
    monkeypatch.setattr(T, "BLOCK", 16)
    assert all_scores(real, fake) == pytest.approx(reference, rel=1e-10)


def test_one_pass_gives_the_separate_scores():
    real, fake = inception_like(50, 40), inception_like(35, 41, shift=0.03)
    nn, mmd = T.nearest_neighbour_accuracy_and_mmd_xu(real, fake, sigma=0.5)
    assert nn == T.nearest_neighbour_accuracy(real, fake)
    assert mmd == T.mmd_xu(real, fake, sigma=0.5)


def test_the_suite_reports_the_two_sample_metrics_and_describes_them_in_the_card():
    """Wiring: the one-pass suite's scores carry the three metrics (values tested above) and the card
    names each by its definition; a too-small Wasserstein cap is refused."""
    from i2ibench.errors import ConfigError
    from i2ibench.metrics.suite import DistributionSettings, distribution_metrics

    generator = torch.Generator().manual_seed(3)
    real, fake = torch.rand(30, 64, generator=generator, dtype=torch.float64), \
        torch.rand(25, 64, generator=generator, dtype=torch.float64) + 0.2
    settings = DistributionSettings(kid_subset_size=10, kid_subsets=5, is_splits=1, wasserstein_max_samples=20)
    metrics, unavailable = distribution_metrics(real, fake, settings)
    assert metrics["wasserstein_n_real"] == 20 and metrics["wasserstein_n_fake"] == 20 and metrics["wasserstein"] > 0
    assert 0.5 < metrics["nn1_accuracy"] <= 1 and metrics["mmd_xu"] > 0
    card = settings.card()
    assert "ot.emd2" in card["wasserstein"] and "biased" in card["mmd_xu"] and "1-nearest" in card["nn1_accuracy"]
    with pytest.raises(ConfigError):
        DistributionSettings(wasserstein_max_samples=1)
