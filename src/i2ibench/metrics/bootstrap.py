"""Bootstrap intervals over the evaluated images, as small pure functions: features -> statistics -> score.

What is resampled: the EVALUATED (translated) images, by source. Each resample draws the sources'
positions with replacement (as many as there are sources); a source drawn c times contributes
all K of its outputs c times (multi-style tasks: N x K outputs). The real set stays fixed: it is
the reference distribution, not the thing being measured. One resample is a vector of counts
(how often each source was drawn), and every metric of a task is recomputed from the SAME counts,
so two methods evaluated on the same test set with the same seed see the same resamples and
their replicates can be differenced (a paired bootstrap, `bench.report.compare`).

Each metric is recomputed exactly on each resample, from statistics prepared once:
- FID: mean and trace terms from count-weighted sums; tr sqrt(S_r S_f) from the u x u symmetric
  matrix Y S_r Y^T (u = distinct images drawn, ~0.63 n; S_f = Y^T Y / (n - 1)), whose nonzero
  eigenvalues are those of S_r S_f (S_r = A^T A: Y S_r Y^T = (Y A^T)(Y A^T)^T); above
  FID_GRAM_MAX_ROWS images, from the d x d matrix S_r^1/2 S_f S_r^1/2 instead.
- KID and the Gaussian kernel MMD^2: the unbiased MMD^2 of the whole resampled set against the
  whole real set, with pairs of copies of one image left out of the fake-fake term (a duplicated
  image is not a second sample; keeping its self-similarity would bias the estimate upward by
  about (k(x, x) - k(x, y)) / n, more than a good method's KID at n = 100). KID's subsets are not
  redrawn per resample: its point value is the subset mean, an estimate of this full-set value,
  and the subsets' own spread is already its `kid_std`.
- MMD(Xu): the biased V-statistic, recomputed as is on the resampled multiset (duplicates included,
  as the V-statistic includes each image's pair with itself).
- Content metrics (SSIM, PSNR, LPIPS against source / ground truth / background, LPIPS diversity):
  the count-weighted mean of the per-source values (NaN values left out, as `nanmean`).

Interval: the percentile interval at `level`, its ends the order statistics just outside it
(numpy's quantile methods "lower" at (1 - level) / 2 and "higher" at (1 + level) / 2: no
interpolation, so infinite values (PSNR of untouched pixels) stay meaningful), re-centred on the
metric's value (shifted by value - median of the replicates; see `percentile_interval`).

Cost (measured on the shared 2-core CPU, one torch thread, d = 2048, per task): N = 100 and 1000
resamples: FID 1.1 s, the kernel MMDs 0.02 s, the content means 1 ms; inside one evaluation of
100 images the whole bootstrap took 3.0 s of 127 s. FID dominates and grows as min(N, d)^3 per
resample: ~0.2 s per resample at N = 1000 (3 min per task for 1000 resamples), ~9 s at N = 5000
(the d x d path: hours on a CPU). For large test sets lower `bootstrap_resamples` (the card
records it), or set it to 0 to switch the intervals off.
"""

from __future__ import annotations

import base64
import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
FID_GRAM_MAX_ROWS = 4096  # the N x N matrix F S_r F^T (128 MB at 4096); beyond it, the d x d path
KERNEL_BLOCK = 1024  # fake rows of one kernel tile
RESAMPLE_CHUNK = 256  # resamples whose count vectors are multiplied at once (N x 256 float64)
BATCH_BYTES = 64 * 2**20  # the FID resamples' small matrices decomposed in one batched call


# --- resamples ---------------------------------------------------------------------------------------

def task_seed(seed: int, task: str) -> np.random.SeedSequence:
    """The seed of one task's resamples: (metric seed, CRC32 of the task name), the same in every process."""
    return np.random.SeedSequence([seed, zlib.crc32(task.encode("utf-8"))])


def resample_indices(n_sources: int, resamples: int, seed: int, task: str) -> np.ndarray:
    """resamples x n_sources positions drawn with replacement (numpy PCG64 seeded by `task_seed`)."""
    rng = np.random.Generator(np.random.PCG64(task_seed(seed, task)))
    return rng.integers(0, n_sources, size=(resamples, n_sources))


def counts_from_indices(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each of n positions appears in each resample (resamples x n, int64)."""
    resamples = len(indices)
    flat = (np.arange(resamples)[:, None] * n + indices).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n)


@dataclass(frozen=True)
class Resample:
    """One task's resamples: `counts[b, s]` = how often source s was drawn in resample b."""

    counts: np.ndarray  # resamples x n_sources
    styles: int = 1  # outputs per source; image s * styles + k belongs to source s

    @classmethod
    def draw(cls, n_sources: int, resamples: int, seed: int, task: str, styles: int = 1) -> "Resample":
        return cls(counts_from_indices(resample_indices(n_sources, resamples, seed, task), n_sources), styles)

    def describe(self, task: str, seed: int) -> str:
        """What was resampled, enough to tell whether two records' replicates come from the same draws."""
        return (f"task {task}, seed {seed}, {len(self.counts)} resamples of {self.counts.shape[1]} sources "
                f"x {self.styles} outputs")

    @property
    def image_counts(self) -> np.ndarray:
        """Counts per image: each source's count repeated for its K outputs (resamples x n_sources K)."""
        return np.repeat(self.counts, self.styles, axis=1)


# --- intervals ----------------------------------------------------------------------------------------

def percentile_interval(replicates: np.ndarray, level: float = DEFAULT_LEVEL,
                        value: float | None = None) -> list[float] | None:
    """[lo, hi]: the order statistics at (1 - level) / 2 (rounded down) and (1 + level) / 2 (rounded up),
    shifted by `value` - median(replicates) when `value` (the metric on the evaluated set) is given.

    The shift: FID is biased by the number of DISTINCT images, and a resample holds only ~63% of them,
    so FID's replicates sit above the value itself (at N = 60, the whole interval did); re-centred on
    the value, the interval keeps the replicates' spread and asymmetry without that offset. For
    means (content metrics) and the tie-free MMD^2 the median is the value to sampling noise, and the
    shift is negligible. None when any replicate is NaN (a metric undefined on some resample).
    """
    values = np.asarray(replicates, dtype=np.float64)
    if len(values) == 0 or np.isnan(values).any():
        return None
    low = float(np.quantile(values, (1 - level) / 2, method="lower"))
    high = float(np.quantile(values, (1 + level) / 2, method="higher"))
    if value is not None:
        offset = float(value) - float(np.quantile(values, 0.5, method="lower"))
        if math.isfinite(offset):
            low, high = low + offset, high + offset
    return [low, high]


RESAMPLED = "resampled"  # the entry of `bootstrap_replicates` that says which resamples they come from


def record_entries(replicates: dict[str, np.ndarray], values: dict, level: float = DEFAULT_LEVEL,
                   resampled: str | None = None) -> dict:
    """The record's `intervals` ({metric: [lo, hi] or None}) and `bootstrap_replicates` ({metric: base64},
    and under RESAMPLED the `resampled` description) of the metrics that have a value in `values` (an
    unavailable metric gets neither). Two records' replicates pair only when `resampled` matches."""
    kept = {name: r for name, r in replicates.items() if values.get(name) is not None}
    stored = {name: encode_replicates(r) for name, r in kept.items()}
    if resampled is not None:
        stored[RESAMPLED] = resampled
    return {"intervals": {name: percentile_interval(r, level, values[name]) for name, r in kept.items()},
            "bootstrap_replicates": stored}


def encode_replicates(replicates: np.ndarray) -> str:
    """Replicates as base64 of little-endian float32 (5 kB per 1000), compact inside the JSON record."""
    return base64.b64encode(np.asarray(replicates, dtype="<f4").tobytes()).decode("ascii")


def decode_replicates(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float64)


# --- content metrics: the mean of per-source values -------------------------------------------------

def mean_replicates(values: Tensor | np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Count-weighted mean of per-source values for each resample; NaN values are left out (nanmean)."""
    values = np.asarray(values, dtype=np.float64)
    defined = ~np.isnan(values)
    weights = counts[:, defined].astype(np.float64)
    kept = values[defined]
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if np.isinf(kept).any():  # inf * 0 would be NaN: an infinite value counts only where drawn
            finite = np.isfinite(kept)
            sums = weights[:, finite] @ kept[finite]
            for value in np.unique(kept[~finite]):
                drawn = weights[:, kept == value].sum(axis=1) > 0
                sums = np.where(drawn, sums + value, sums)
        else:
            sums = weights @ kept
        return np.where(total > 0, sums / np.where(total > 0, total, 1), np.nan)


# --- FID ----------------------------------------------------------------------------------------------

def real_statistics(real: Tensor) -> tuple[Tensor, Tensor, float]:
    """(mean, centred features / sqrt(n_r - 1), trace of S_r) in float64: S_r = A^T A for the returned A."""
    real64 = real.double()
    mean = real64.mean(0)
    scaled = (real64 - mean) / math.sqrt(len(real) - 1)
    return mean, scaled, float(scaled.square().sum())


def frechet_replicates(real: Tensor, fake: Tensor, counts: np.ndarray) -> np.ndarray:
    """FID of each resample of `fake` (counts: resamples x N_fake) against the fixed `real`, exact, float64.

    Per resample with counts w (n = sum w): mu_f = sum w_i f_i / n, S_f = sum w_i (f_i - mu_f)(f_i - mu_f)^T
    / (n - 1), exactly the statistics of the resampled set with its duplicates. With Y = diag(sqrt w)(I -
    1 w^T / n) F over the u drawn images, S_f = Y^T Y / (n - 1), and the nonzero eigenvalues of S_r S_f
    are those of the symmetric u x u matrix Y S_r Y^T / (n - 1) = (Y A^T)(Y A^T)^T / (n - 1), with
    F A^T computed once, so each resample costs one small symmetric eigen-decomposition.
    """
    mean_real, scaled_real, trace_real = real_statistics(real)
    fake64 = fake.double()
    centre = fake64.mean(0)  # shifting the fake set changes no covariance; it keeps K's entries small
    shifted = fake64 - centre
    weights = torch.from_numpy(counts).double()
    n = weights.sum(1)  # resamples
    fake_means = weights @ shifted / n[:, None]  # resamples x d, relative to `centre`
    gaps = (mean_real - centre)[None, :] - fake_means
    squared_norms = shifted.square().sum(1)
    trace_fake = (weights @ squared_norms - n * fake_means.square().sum(1)) / (n - 1)
    if len(fake) <= FID_GRAM_MAX_ROWS:
        trace_sqrt = _trace_sqrt_small(shifted, scaled_real, weights, n)
    else:
        trace_sqrt = _trace_sqrt_large(shifted, scaled_real, weights, n, fake_means)
    return (gaps.square().sum(1) + trace_real + trace_fake - 2.0 * trace_sqrt).numpy()


def _trace_sqrt_small(shifted: Tensor, scaled_real: Tensor, weights: Tensor, n: Tensor) -> Tensor:
    """tr sqrt(S_r S_f) per resample from the u x u matrix Y S_r Y^T = (Y A^T)(Y A^T)^T (N_fake <= FID_GRAM_MAX_ROWS).

    S_r = A^T A, with A the scaled centred real set when it has fewer rows than dimensions, else
    Lambda^1/2 V^T from S_r = V Lambda V^T. Row i of Y A^T is sqrt(w_i) (p_i - sum_j w_j p_j / n),
    p_i = A f_i: only the drawn rows are nonzero. Eigenvalues of the product, not singular values of
    Y A^T: rounding then adds up to ~1e-8 sqrt(largest eigenvalue) per zero eigenvalue, far below
    the float32 in which replicates are stored, for 2-3x less time.
    """
    if len(scaled_real) <= scaled_real.shape[1]:
        projected = shifted @ scaled_real.T  # N x n_r
    else:
        eigenvalues, vectors = torch.linalg.eigh(scaled_real.T @ scaled_real)
        projected = shifted @ (vectors * eigenvalues.clamp_min(0).sqrt())  # N x d
    # Each resample's drawn images, padded to the largest number of them with weight-0 rows: a zero row
    # adds a zero singular value. A group of resamples is decomposed in one batched call.
    drawn_counts = (weights > 0).sum(1)
    order = torch.argsort((weights > 0).to(torch.int8), dim=1, descending=True, stable=True)  # drawn first
    size = int(drawn_counts.max())
    group = max(1, BATCH_BYTES // (8 * size * projected.shape[1]))
    out = torch.empty(len(weights), dtype=torch.float64)
    for start in range(0, len(weights), group):
        rows = slice(start, start + group)
        picked = order[rows, :size]  # resamples x size
        w = torch.gather(weights[rows], 1, picked)  # 0 on the padding
        p = projected[picked]  # resamples x size x r
        mean = (w[:, :, None] * p).sum(1) / n[rows, None]
        y = w.sqrt()[:, :, None] * (p - mean[:, None, :])
        # The smaller of y y^T and y^T y (same nonzero eigenvalues): fewer zero eigenvalues whose rounding
        # the square root would magnify; 2-3x faster than svdvals(y) at N = 100-1000.
        product = y @ y.transpose(1, 2) if size <= y.shape[2] else y.transpose(1, 2) @ y
        eigenvalues = torch.linalg.eigvalsh(product)
        out[rows] = eigenvalues.clamp_min(0).sqrt().sum(1) / (n[rows] - 1).sqrt()
    return out


def _trace_sqrt_large(shifted: Tensor, scaled_real: Tensor, weights: Tensor, n: Tensor,
                      fake_means: Tensor) -> Tensor:
    """tr sqrt(S_r S_f) = tr sqrt(S_r^1/2 S_f S_r^1/2) per resample, d x d (large sets)."""
    covariance_real = scaled_real.T @ scaled_real
    eigenvalues, vectors = torch.linalg.eigh(covariance_real)
    root_real = (vectors * eigenvalues.clamp_min(0).sqrt()) @ vectors.T
    out = torch.empty(len(weights), dtype=torch.float64)
    for b, w in enumerate(weights):
        drawn = torch.nonzero(w).flatten()
        rows = shifted[drawn]
        scatter = (rows * w[drawn, None]).T @ rows - n[b] * torch.outer(fake_means[b], fake_means[b])
        middle = root_real @ (scatter / (n[b] - 1)) @ root_real
        out[b] = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return out


# --- kernel MMDs ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KernelSums:
    """What the resampled kernel MMDs need, for each resample: sums over fake-fake pairs (all pairs, and
    pairs of copies of one image), over fake-real pairs, and the fixed real-real sums."""

    fake_pairs: np.ndarray  # w^T K_ff w
    fake_self: np.ndarray  # sum_i w_i^2 K_ff[i, i]: pairs of copies of one image (and an image with itself)
    cross: np.ndarray  # sum_i w_i sum_j K_fr[i, j]
    real_pairs: float  # sum over all real pairs, diagonal included
    real_diagonal: float  # sum_j K_rr[j, j]


KERNELS = ("polynomial", "gaussian", "xu")


def kernel_sums(real: Tensor, fake: Tensor, counts: np.ndarray, gaussian_gamma: float | None,
                xu_gamma: float | None) -> dict[str, KernelSums]:
    """Count-weighted kernel sums of KID's cubic kernel and the Gaussian kernels (bandwidths from the real
    set, fixed), for every resample, from one pass over the fake-fake and fake-real dot products."""
    d = fake.shape[1]
    fake64, real64 = fake.double(), real.double()
    fake_sq, real_sq = fake64.square().sum(1), real64.square().sum(1)
    weights = torch.from_numpy(counts).double().T.contiguous()  # N x resamples
    gammas = {"gaussian": gaussian_gamma, "xu": xu_gamma}
    names = ["polynomial"] + [name for name, gamma in gammas.items() if gamma is not None]

    def kernels(dots: Tensor, x_sq: Tensor, y_sq: Tensor) -> dict[str, Tensor]:
        out = {"polynomial": (dots / d + 1.0) ** 3}
        if len(names) > 1:
            squared = (x_sq[:, None] + y_sq[None, :] - 2.0 * dots).clamp_min_(0)
            for name in names[1:]:
                out[name] = torch.exp(-gammas[name] * squared)
        return out

    pairs = {name: torch.zeros(weights.shape[1], dtype=torch.float64) for name in names}
    cross = {name: torch.zeros(weights.shape[1], dtype=torch.float64) for name in names}
    for start in range(0, len(fake), KERNEL_BLOCK):
        block = fake64[start:start + KERNEL_BLOCK]
        block_weights = weights[start:start + KERNEL_BLOCK]
        with_fake = kernels(block @ fake64.T, fake_sq[start:start + KERNEL_BLOCK], fake_sq)
        with_real = kernels(block @ real64.T, fake_sq[start:start + KERNEL_BLOCK], real_sq)
        for name in names:
            pairs[name] += (block_weights * (with_fake[name] @ weights)).sum(0)
            cross[name] += block_weights.T @ with_real[name].sum(1)
    real_pairs = {name: 0.0 for name in names}
    for start in range(0, len(real), KERNEL_BLOCK):
        block = real64[start:start + KERNEL_BLOCK]
        for name, values in kernels(block @ real64.T, real_sq[start:start + KERNEL_BLOCK], real_sq).items():
            real_pairs[name] += float(values.sum())
    diagonals = {"polynomial": (fake_sq / d + 1.0) ** 3, "gaussian": torch.ones(len(fake), dtype=torch.float64),
                 "xu": torch.ones(len(fake), dtype=torch.float64)}
    real_diagonals = {"polynomial": float(((real_sq / d + 1.0) ** 3).sum()), "gaussian": float(len(real)),
                      "xu": float(len(real))}
    return {name: KernelSums(pairs[name].numpy(), (weights.square().T @ diagonals[name]).numpy(),
                             cross[name].numpy(), real_pairs[name], real_diagonals[name])
            for name in names}


def unbiased_mmd2_replicates(sums: KernelSums, n_real: int, counts: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 of each resampled fake multiset against the real set; copies of one image are not
    paired with each other (see the module docstring). With all counts 1 it is the usual unbiased MMD^2."""
    n = counts.sum(1).astype(np.float64)
    distinct_pairs = n * n - np.square(counts.astype(np.float64)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fake_within = (sums.fake_pairs - sums.fake_self) / distinct_pairs
    real_within = (sums.real_pairs - sums.real_diagonal) / (n_real * (n_real - 1))
    return real_within + fake_within - 2.0 * sums.cross / (n * n_real)


def xu_mmd_replicates(sums: KernelSums, n_real: int, counts: np.ndarray) -> np.ndarray:
    """Xu et al.'s sqrt(max(0, biased MMD^2)) (V-statistic) of each resampled multiset."""
    n = counts.sum(1).astype(np.float64)
    squared = sums.real_pairs / n_real**2 + sums.fake_pairs / (n * n) - 2.0 * sums.cross / (n * n_real)
    return np.sqrt(np.maximum(squared, 0.0))


# --- every bootstrapped distribution metric of one task ---------------------------------------------

def distribution_replicates(real: Tensor, fake: Tensor, counts: np.ndarray, gaussian_bandwidth: float | None,
                            xu_scale: float | None) -> dict[str, np.ndarray]:
    """Replicates of fid, kid_mean, kernel_mmd2 and mmd_xu (the record's names) for image counts
    `counts` (resamples x N_fake), in chunks of RESAMPLE_CHUNK resamples."""
    gaussian_gamma = 1.0 / (2.0 * gaussian_bandwidth**2) if gaussian_bandwidth else None
    xu_gamma = 1.0 / (2.0 * xu_scale) if xu_scale else None  # sigma = 1, as `two_sample.mmd_xu`
    parts: dict[str, list[np.ndarray]] = {"fid": [], "kid_mean": [], "kernel_mmd2": [], "mmd_xu": []}
    for start in range(0, len(counts), RESAMPLE_CHUNK):
        chunk = counts[start:start + RESAMPLE_CHUNK]
        parts["fid"].append(frechet_replicates(real, fake, chunk))
        sums = kernel_sums(real, fake, chunk, gaussian_gamma, xu_gamma)
        parts["kid_mean"].append(unbiased_mmd2_replicates(sums["polynomial"], len(real), chunk))
        if "gaussian" in sums:
            parts["kernel_mmd2"].append(unbiased_mmd2_replicates(sums["gaussian"], len(real), chunk))
        if "xu" in sums:
            parts["mmd_xu"].append(xu_mmd_replicates(sums["xu"], len(real), chunk))
    return {name: np.concatenate(values) for name, values in parts.items() if values}
