"""Distribution metrics as small pure functions: features -> statistics -> score.

FID, KID and IS reuse torch-fidelity's own math (precision/recall its definition); statistics are float64.
Everything works on bounded chunks of the float32 features, so the working memory stays
small next to the features themselves (benchmarks/metrics_memory.py: 50k images). The
Gaussian-kernel MMD is written here because no maintained library computes it in blocks.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

FID_FULL_RANK = 2048  # fewer samples than feature dimensions: a rank-deficient covariance


ROWS = 1024  # rows of float32 features converted to float64 at a time


def gaussian_statistics(features: Tensor) -> dict[str, np.ndarray]:
    """Mean and covariance in float64 (torch-fidelity's statistics format), two passes over row chunks."""
    mean = sum(chunk.double().sum(0) for chunk in features.split(ROWS)) / len(features)
    covariance = torch.zeros(features.shape[1], features.shape[1], dtype=torch.float64)
    for chunk in features.split(ROWS):
        centred = chunk.double() - mean
        covariance.addmm_(centred.T, centred)
    return {"mu": mean.numpy(), "sigma": (covariance / (len(features) - 1)).numpy()}


def frechet_distance(real_stats: dict, fake_stats: dict) -> float:
    """FID from two sets of statistics: torch-fidelity's statistics-to-metric function."""
    return float(fid_statistics_to_metric(real_stats, fake_stats, verbose=False)[KEY_METRIC_FID])


def frechet_distance_from_features(real: Tensor, fake: Tensor, max_product: int = 4096 * 4096) -> float:
    """FID from features, exact, in float64.

    For small sets it uses tr sqrt(S_r S_f) = ||A B^T||_* / sqrt((n_r - 1)(n_f - 1)), with A, B the
    centred feature matrices: the nonzero eigenvalues of S_r S_f are the squared singular values
    of that n_r x n_f matrix, so an SVD of (say) 100 x 100 replaces the eigen-decomposition of a
    non-symmetric 2048 x 2048 product (about 1000x faster at N = 100, and no complex rounding).
    Larger sets go through torch-fidelity's statistics-to-metric function.
    """
    n_real, n_fake = len(real), len(fake)
    if n_real * n_fake > max_product:
        return frechet_distance(gaussian_statistics(real), gaussian_statistics(fake))
    real64, fake64 = real.double(), fake.double()
    mean_gap = real64.mean(0) - fake64.mean(0)
    centred_real, centred_fake = real64 - real64.mean(0), fake64 - fake64.mean(0)
    trace_real = centred_real.square().sum() / (n_real - 1)
    trace_fake = centred_fake.square().sum() / (n_fake - 1)
    trace_sqrt = torch.linalg.svdvals(centred_real @ centred_fake.T).sum() / math.sqrt((n_real - 1) * (n_fake - 1))
    return float(mean_gap @ mean_gap + trace_real + trace_fake - 2.0 * trace_sqrt)


TORCH_FIDELITY_SEED = 2020  # torch-fidelity's default `rng_seed`: its KID subsets and IS splits


def kid_subset_size(n_real: int, n_fake: int, requested: int | None = None) -> int:
    """min(1000, N_real, N_fake) unless set (then capped by the set sizes)."""
    return min(1000 if requested is None else requested, n_real, n_fake)


def kid_subsets_indices(n_real: int, n_fake: int, subset_size: int, subsets: int,
                        seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(real rows, fake rows) of each KID subset, drawn exactly as torch-fidelity draws them.

    torch-fidelity's `kid_features_to_metric(features_1, features_2)` takes input1 (the generated
    images) first and draws, per subset, `rng.choice(n_1, m, replace=False)` then
    `rng.choice(n_2, m, replace=False)` from one `np.random.RandomState(rng_seed)`. The same
    draws here make KID equal to torch-fidelity's whenever a set is subsampled, not only when a
    subset is the whole set.
    """
    rng = np.random.RandomState(seed)
    picks = []
    for _ in range(subsets):
        fake_rows = rng.choice(n_fake, subset_size, replace=False)
        real_rows = rng.choice(n_real, subset_size, replace=False)
        picks.append((real_rows, fake_rows))
    return picks


GRAM_MAX_ROWS = 4096  # the whole-set kernel matrix of at most 4096 x 4096 float64 values (128 MB)


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """KID's cubic kernel (x.y / d + 1)^3 in float64, as torch-fidelity's `kernel_poly` writes it
    (gamma = 1 / d, a power of two for d = 2048, so multiplying by it is exact)."""
    return (x.double() @ y.double().T * (1.0 / x.shape[1]) + 1.0) ** 3


def unbiased_mmd2(k_xx: Tensor, k_yy: Tensor, k_xy: Tensor) -> float:
    """Unbiased MMD^2 from the three kernel matrices of one subset (m x m each)."""
    m = k_xx.shape[0]
    within = (k_xx.sum() - k_xx.diagonal().sum()) + (k_yy.sum() - k_yy.diagonal().sum())
    return float(within / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(real: Tensor, fake: Tensor, subset_size: int, subsets: int,
                              seed: int = TORCH_FIDELITY_SEED) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel, over random subsets.

    Subsets without replacement, torch-fidelity's draws (`kid_subsets_indices`); mean and std over
    subsets; torch-fidelity's kernel (d^-1 x.y + 1)^3, in float64 (torch-fidelity runs it on its
    float32 features). A kernel value depends only on its two samples, so when the whole-set
    kernel matrix is small and cheaper than the subsets' own (100 subsets of 100 from 100 + 100
    images: 40k values instead of 3M), it is computed once in torch and each subset gathers its
    entries; otherwise each subset is computed alone. Both in torch, not numpy: numpy's BLAS
    threads fought torch's OpenMP pool for the cores (KID took 30x longer under load).
    """
    picks = kid_subsets_indices(len(real), len(fake), subset_size, subsets, seed)
    rows = len(real) + len(fake)
    values = torch.empty(subsets, dtype=torch.float64)
    if rows <= GRAM_MAX_ROWS and rows * rows <= 3 * subsets * subset_size * subset_size:
        kernel = polynomial_kernel(torch.cat([fake, real]), torch.cat([fake, real]))
        for i, (real_rows, fake_rows) in enumerate(picks):
            f, r = torch.from_numpy(fake_rows), torch.from_numpy(real_rows) + len(fake)
            values[i] = unbiased_mmd2(kernel[f][:, f], kernel[r][:, r], kernel[f][:, r])
    else:
        for i, (real_rows, fake_rows) in enumerate(picks):
            f, r = fake[torch.from_numpy(fake_rows)], real[torch.from_numpy(real_rows)]
            values[i] = unbiased_mmd2(polynomial_kernel(f, f), polynomial_kernel(r, r), polynomial_kernel(f, r))
    return float(values.mean()), float(values.std(unbiased=False))  # numpy's std: population


def split_of_each_sample(n: int, splits: int, seed: int) -> Tensor:
    """The IS split of each of n samples: torch-fidelity shuffles with RandomState(seed).permutation(n)
    and cuts the shuffled order into `splits` consecutive parts."""
    order = torch.from_numpy(np.random.RandomState(seed).permutation(n))
    split = torch.empty(n, dtype=torch.long)
    for i in range(splits):
        split[order[i * n // splits:(i + 1) * n // splits]] = i
    return split


def inception_score_from_sums(probability_sums: Tensor, neg_entropy_sums: Tensor,
                              counts: Tensor) -> tuple[float, float]:
    """IS from per-split sums: exp(mean_x sum_c p log p - sum_c q log q), q the split's mean p.

    The same value as torch-fidelity's mean over x of KL(p_x || q), since sum_x p_x = n q; but
    additive over samples, so an evaluation accumulates a few numbers per split instead of
    keeping every image's 1008 logits (200 MB at 50k images).
    """
    q = probability_sums / counts[:, None]
    kl = neg_entropy_sums / counts - (q * torch.log(q)).nan_to_num().sum(dim=1)
    scores = torch.exp(kl).numpy()
    return float(scores.mean()), float(scores.std())


def median_distance(features: Tensor, max_samples: int, seed: int) -> float:
    """Median pairwise Euclidean distance (the median heuristic) over at most `max_samples` points."""
    if len(features) > max_samples:
        pick = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))[:max_samples]
        features = features[pick]
    distances = torch.pdist(features.double())  # the condensed upper triangle: n (n - 1) / 2 values
    return float(np.median(distances.numpy()))  # torch.median takes the lower middle value for even counts


def gaussian_mmd2(real: Tensor, fake: Tensor, bandwidth: float, block: int = 512) -> float:
    """Unbiased MMD^2 with k(x, y) = exp(-|x - y|^2 / (2 bandwidth^2)) (Gretton et al. 2012).

    Xu et al. 2018 ("An empirical study on evaluation metrics of GANs") report this kernel MMD
    on convolutional features. Kernel sums are accumulated over block x block tiles in float64,
    so memory stays flat whatever N is.
    """
    gamma = 1.0 / (2.0 * bandwidth * bandwidth)

    def kernel_sum(x: Tensor, y: Tensor) -> float:
        total = 0.0
        for x_block in x.split(block):
            x64 = x_block.double()
            for y_block in y.split(block):
                total += float(torch.exp(-gamma * torch.cdist(x64, y_block.double()).square_()).sum())
        return total

    m, n = len(real), len(fake)
    # k(x, x) = 1 on the diagonal: subtract it for the unbiased within-set terms.
    within_real = (kernel_sum(real, real) - m) / (m * (m - 1))
    within_fake = (kernel_sum(fake, fake) - n) / (n * (n - 1))
    across = kernel_sum(real, fake) / (m * n)
    return within_real + within_fake - 2.0 * across


def distances_to(block: Tensor, support: Tensor, support_sq_norms: Tensor) -> Tensor:
    """Euclidean distances block x support, as cdist's matrix-product path computes them, but
    without the N x (D + 2) augmented copy of `support` that cdist makes on every call (+410 MB
    at 50k images)."""
    squared = torch.addmm(support_sq_norms.unsqueeze(0), block, support.T, alpha=-2)
    return squared.add_(block.square().sum(1, keepdim=True)).clamp_min_(0).sqrt_()


def nearest_neighbour_radii(features: Tensor, k: int, rows: int) -> Tensor:
    """Distance from each point to its k-th nearest neighbour in the same set (itself excluded)."""
    radii = torch.empty(len(features))
    sq_norms = torch.linalg.vector_norm(features, dim=1).square()  # no N x D temporary
    for start in range(0, len(features), rows):
        distances = distances_to(features[start:start + rows], features, sq_norms)
        radii[start:start + rows] = distances.kthvalue(k + 1, dim=1).values  # +1: the point itself, at 0
    return radii


def block_rows(n: int) -> int:
    """Rows per distance block: blocks of over 32 MB are mmapped by glibc and really freed after use;
    smaller ones churn through per-thread heap arenas (+500 MB of fragmentation at 50k images)."""
    return max(128, -(-40 * 2**20 // (4 * n)))


def coverage(queries: Tensor, support: Tensor, radii: Tensor, rows: int) -> float:
    """Fraction of `queries` inside at least one ball (support point, its k-NN radius)."""
    inside = 0
    sq_norms = torch.linalg.vector_norm(support, dim=1).square()
    for block in queries.split(rows):
        inside += int((distances_to(block, support, sq_norms) <= radii).any(dim=1).sum())
    return inside / len(queries)


def precision_recall(real: Tensor, fake: Tensor, neighborhood: int) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): k-NN balls around each set's points.

    Precision: the fraction of fakes inside the real manifold; recall: of reals inside the fake one.
    The definition (and the numbers) of torch-fidelity's `prc` metric, computed in blocks of rows x N
    distances, one matrix product each (`distances_to`): torch-fidelity's memory-saving path builds
    the same rows from many 256 x 256 pieces, which fragments the heap (+650 MB at 20k images;
    benchmarks/metrics_memory.py).
    """
    rows_real, rows_fake = block_rows(len(real)), block_rows(len(fake))
    precision = coverage(fake, real, nearest_neighbour_radii(real, neighborhood, rows_real), rows_real)
    recall = coverage(real, fake, nearest_neighbour_radii(fake, neighborhood, rows_fake), rows_fake)
    return precision, recall
