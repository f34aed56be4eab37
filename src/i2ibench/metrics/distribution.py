"""Distribution metrics as small pure functions: features -> statistics -> score.

FID, KID, IS and precision/recall reuse torch-fidelity's own math; statistics are float64.
The Gaussian-kernel MMD is written here because no maintained library computes it on
features in blocks (needed to keep memory flat at 50k images).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_kid import kernel_mmd
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

FID_FULL_RANK = 2048  # fewer samples than feature dimensions: a rank-deficient covariance


def gaussian_statistics(features: Tensor) -> dict[str, np.ndarray]:
    """Mean and covariance in float64 (torch-fidelity's statistics format)."""
    array = features.double().numpy()
    return {"mu": array.mean(axis=0), "sigma": np.cov(array, rowvar=False)}


def frechet_distance(real_stats: dict, fake_stats: dict) -> float:
    """FID from two sets of statistics: torch-fidelity's statistics-to-metric function."""
    return float(fid_statistics_to_metric(real_stats, fake_stats, verbose=False)[KEY_METRIC_FID])


def kid_subset_size(n_real: int, n_fake: int, requested: int | None = None) -> int:
    """min(1000, N_real, N_fake) unless set (then capped by the set sizes)."""
    return min(requested or 1000, n_real, n_fake)


def kernel_inception_distance(real: Tensor, fake: Tensor, subset_size: int, subsets: int,
                              seed: int) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel, over random subsets.

    Subsets are drawn without replacement by a seeded torch.Generator; mean and std over subsets.
    The per-subset MMD is torch-fidelity's `kernel_mmd` (d^-1 x.y + 1)^3, computed in float64.
    """
    generator = torch.Generator().manual_seed(seed)
    real64, fake64 = real.double().numpy(), fake.double().numpy()
    values = np.empty(subsets)
    for i in range(subsets):
        pick_real = torch.randperm(len(real64), generator=generator)[:subset_size].numpy()
        pick_fake = torch.randperm(len(fake64), generator=generator)[:subset_size].numpy()
        values[i] = kernel_mmd(real64[pick_real], fake64[pick_fake], verbose=False)
    return float(values.mean()), float(values.std())


def inception_score(logits: Tensor, splits: int, seed: int) -> tuple[float, float]:
    """IS (Salimans et al. 2016) from logits: torch-fidelity's function, `splits` shuffled splits."""
    result = isc_features_to_metric(logits, splits=splits, shuffle=True, rng_seed=seed)
    return float(result[KEY_METRIC_ISC_MEAN]), float(result[KEY_METRIC_ISC_STD])


def median_distance(features: Tensor, max_samples: int, seed: int) -> float:
    """Median pairwise Euclidean distance (the median heuristic) over at most `max_samples` points."""
    if len(features) > max_samples:
        pick = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))[:max_samples]
        features = features[pick]
    x = features.double()
    distances = torch.cdist(x, x)
    upper = distances[torch.triu_indices(len(x), len(x), offset=1).unbind()]
    return float(np.median(upper.numpy()))  # torch.median takes the lower middle value for even counts


def gaussian_mmd2(real: Tensor, fake: Tensor, bandwidth: float, block: int = 1024) -> float:
    """Unbiased MMD^2 with k(x, y) = exp(-|x - y|^2 / (2 bandwidth^2)) (Gretton et al. 2012).

    Xu et al. 2018 ("An empirical study on evaluation metrics of GANs") report this kernel MMD
    on convolutional features. Kernel sums are accumulated in blocks of `block` rows, so memory
    stays at block x N whatever N is; float64 throughout.
    """
    gamma = 1.0 / (2.0 * bandwidth * bandwidth)

    def kernel_sum(x: Tensor, y: Tensor) -> float:
        total = 0.0
        y64 = y.double()
        for start in range(0, len(x), block):
            d2 = torch.cdist(x[start:start + block].double(), y64).square_()
            total += float(torch.exp(-gamma * d2).sum())
        return total

    m, n = len(real), len(fake)
    # k(x, x) = 1 on the diagonal: subtract it for the unbiased within-set terms.
    within_real = (kernel_sum(real, real) - m) / (m * (m - 1))
    within_fake = (kernel_sum(fake, fake) - n) / (n * (n - 1))
    across = kernel_sum(real, fake) / (m * n)
    return within_real + within_fake - 2.0 * across


def precision_recall(real: Tensor, fake: Tensor, neighborhood: int) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): torch-fidelity's k-NN manifolds.

    Computed in row batches (torch-fidelity's memory-saving path), so memory stays flat.
    """
    result = prc_features_to_metric(fake, real, prc_neighborhood=neighborhood, prc_batch_size=1024,
                                    save_cpu_ram=True, verbose=False)
    return float(result[KEY_METRIC_PRECISION]), float(result[KEY_METRIC_RECALL])

