"""MetricSuite: every distribution metric of one task from ONE Inception pass per image.

States are torchmetrics states (features and each sample's dataset index as lists, the Inception
Score's per-split sums as tensors), so DDP sync is torchmetrics' own all-gather and sum. After sync the samples are put back in dataset order by
their index: the numbers then depend neither on the batch size nor on how the evaluation set
was sharded over processes. Features stay float32 on the CPU (50k images: 400 MB per set).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

from i2ibench.errors import ConfigError
from i2ibench.metrics import bootstrap as BS
from i2ibench.metrics import distribution as D
from i2ibench.metrics import two_sample as TS
from i2ibench.metrics.inception import IS_CLASSES

log = logging.getLogger(__name__)


# The smallest value of each integer setting, with why: a smaller one would give NaN, an empty
# computation or a silent fallback. `i2ibench eval` checks its options against it too.
SETTING_MINIMUM: dict[str, tuple[int, str]] = {
    "kid_subset_size": (2, "the unbiased MMD^2 needs 2 samples per subset"),
    "kid_subsets": (1, "KID averages over at least one subset"),
    "is_splits": (1, "IS averages over at least one split"),
    "prc_neighborhood": (1, "precision/recall need the k-th nearest neighbour, k >= 1"),
    "mmd_bandwidth_samples": (2, "the median pairwise distance needs 2 samples"),
    "wasserstein_max_samples": (2, "the earth mover's distance needs 2 points per set"),
    "bootstrap_resamples": (0, "0 switches the bootstrap intervals off"),
}
SEED_RANGE = (0, 2**32 - 1)  # numpy's RandomState (torch-fidelity's sampling) accepts these


def setting_problem(name: str, value: object) -> str | None:
    """What is wrong with `value` for the setting `name` ("must be ..., got ..."), or None when it is valid."""
    if name == "seed":
        low, high = SEED_RANGE
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"must be an integer from {low} to {high}, got {value!r}"
        return None
    if name == "kid_subset_size" and value is None:
        return None  # the default: min(1000, N_real, N_fake)
    low, why = SETTING_MINIMUM[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        unset = " (or unset for min(1000, N_real, N_fake))" if name == "kid_subset_size" else ""
        return f"must be an integer >= {low}{unset}, got {value!r}: {why}"
    return None


def check_setting(name: str, value: object, option: str | None = None) -> None:
    """Raise ConfigError naming `option` (default: the setting's name) unless `value` is in range."""
    if problem := setting_problem(name, value):
        raise ConfigError(f"{option or name} {problem}")


@dataclass(frozen=True)
class DistributionSettings:
    """The knobs of the distribution metrics; all of them go into the protocol card.

    Every value is checked on construction (`check_setting`), so `i2ibench eval` and the
    EvaluationCallback (`--evaluation.*`) reject a bad one before any image is read.
    The seed defaults to torch-fidelity's (2020), which with its sampling scheme makes KID
    subsets and IS splits equal to torch-fidelity's.
    """

    kid_subset_size: int | None = None  # None: min(1000, N_real, N_fake)
    kid_subsets: int = 100
    is_splits: int = 10
    prc_neighborhood: int = 3
    mmd_bandwidth_samples: int = 2000
    seed: int = D.TORCH_FIDELITY_SEED
    wasserstein_max_samples: int = TS.WASSERSTEIN_MAX_SAMPLES  # per set; larger sets are subsampled
    bootstrap_resamples: int = BS.DEFAULT_RESAMPLES  # 0: no intervals
    bootstrap_level: float = BS.DEFAULT_LEVEL

    def __post_init__(self) -> None:
        for name in (*SETTING_MINIMUM, "seed"):
            check_setting(name, getattr(self, name))
        level = self.bootstrap_level
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
            raise ConfigError(f"bootstrap_level must be a number between 0 and 1 (e.g. 0.95), got {level!r}")

    def card(self) -> dict[str, Any]:
        card = asdict(self)
        card["kid_kernel"] = "polynomial (x.y/d + 1)^3, unbiased MMD^2 (Binkowski et al. 2018)"
        card["kid_sampling"] = ("torch-fidelity's: one numpy RandomState(seed); per subset rng.choice(N_fake, m, "
                                "replace=False) then rng.choice(N_real, m, replace=False); m = kid_subset_size")
        card["is_split_sampling"] = ("torch-fidelity's: numpy RandomState(seed).permutation(N_fake), cut into "
                                     "is_splits consecutive parts [i N / splits, (i + 1) N / splits)")
        card["mmd_kernel"] = ("gaussian exp(-|x-y|^2 / 2 s^2), unbiased MMD^2; s = median pairwise distance "
                              f"of the real features (<= {self.mmd_bandwidth_samples} samples, seeded)")
        card["kernel_mmd2"] = card["mmd_kernel"]  # the unbiased MMD^2 column, by its definition
        card["mmd_xu"] = ("Xu et al. 2018's kernel MMD: sqrt(max(0, biased MMD^2)), V-statistic (all pairs, "
                          "diagonals included), k(x,y) = exp(-|x-y|^2 / (2 s)), s = mean of the N_real^2 real-real "
                          "squared distances (diagonal included), float64")
        card["wasserstein"] = ("exact earth mover's distance (POT ot.emd2, network simplex, checked optimal) between "
                               "the real and fake pool3 feature sets, uniform weights 1/N, Euclidean ground cost "
                               "|x-y| (Xu et al. 2018); a set over wasserstein_max_samples="
                               f"{self.wasserstein_max_samples} is subsampled without replacement: one numpy "
                               "RandomState(seed), choice(N_real, m) then choice(N_fake, m)")
        card["nn1_accuracy"] = ("leave-one-out 1-nearest-neighbour accuracy over the pooled real+fake features "
                                "(Lopez-Paz & Oquab 2017; Xu et al. 2018), Euclidean, float64; overall, real and "
                                "fake; 0.5 ideal; a tie between the nearest real and nearest fake counts as real")
        card["precision_recall"] = (f"k-NN manifolds, k={self.prc_neighborhood} (Kynkaanniemi et al. 2019), on the "
                                    "Inception pool3 features (the paper used VGG-16 fc2)")
        card["statistics_dtype"] = "float64"
        if self.bootstrap_resamples:
            card["bootstrap"] = (
                f"{self.bootstrap_level:.0%} percentile intervals from {self.bootstrap_resamples} resamples of the "
                "EVALUATED images (the real set stays fixed): per task, the sources are drawn with replacement "
                "(numpy PCG64 seeded by SeedSequence([seed, crc32(task)])), all K outputs of a source moving "
                "together; the same resamples for every metric of the task; interval ends are the order "
                "statistics just outside the level (no interpolation), shifted by value - median of the "
                "replicates (FID's replicates sit above the value: a resample holds ~63% distinct images)")
            card["bootstrap_metrics"] = (
                "fid (exact per resample), kid_mean (the full-set unbiased MMD^2 that KID's subset mean "
                "estimates, copies of one image never paired with each other; subsets not redrawn), kernel_mmd2 "
                "(the same, Gaussian kernel), mmd_xu (V-statistic as is), content metrics (mean of the per-source "
                "values); replicates stored per task as base64 float32 for paired comparisons")
        return card


def device_sync_fn(device: torch.device | None) -> Callable | None:
    """All-gather through `device` (NCCL gathers only CUDA tensors), results back on the CPU."""
    if device is None or device.type == "cpu":
        return None

    def gather(tensor: Tensor, group: Any = None) -> list[Tensor]:
        return [t.cpu() for t in gather_all_tensors(tensor.to(device), group)]

    return gather


BLOCK_ROWS = 8192  # batches are merged into blocks this tall (64 MB of pool3 features)


class IndexedSamples(Metric):
    """Per-sample tensors keyed by dataset index; `compute()` returns them in index order, synced.

    Small per-batch tensors are merged into blocks of BLOCK_ROWS as they arrive. Blocks are
    larger than glibc's largest mmap threshold (32 MB), so they are mmapped and really given
    back to the OS when freed; thousands of freed batch tensors would instead stay in the heap
    and double the memory of a 50k-image evaluation when the states are finally merged.
    """

    full_state_update = False

    def __init__(self, names: tuple[str, ...], sync_device: torch.device | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__(dist_sync_fn=device_sync_fn(sync_device))
        self.names, self.value_dtype = names, dtype
        self.sum_names: list[str] = []  # small tensor states summed over processes (see add_sum_state)
        self.add_state("index", default=[], dist_reduce_fx="cat")
        for name in names:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._unmerged_items = self._unmerged_rows = 0

    def add_sum_state(self, name: str, default: Tensor) -> None:
        self.add_state(name, default=default, dist_reduce_fx="sum")
        self.sum_names.append(name)

    def update(self, index: Tensor, **values: Tensor) -> None:
        self.index.append(index.detach().long().cpu())
        for name in self.names:
            getattr(self, name).append(values[name].detach().to(self.value_dtype).cpu())
        self._unmerged_items += 1
        self._unmerged_rows += len(index)
        if self._unmerged_rows >= BLOCK_ROWS:
            for name in ("index", *self.names):
                state = getattr(self, name)
                block = torch.cat(state[-self._unmerged_items:])
                del state[-self._unmerged_items:]
                state.append(block)
            self._unmerged_items = self._unmerged_rows = 0

    def reset(self) -> None:
        super().reset()
        self._unmerged_items = self._unmerged_rows = 0

    def compute(self) -> dict[str, Tensor]:
        raise NotImplementedError("use ordered(): torchmetrics clones whatever compute() returns, "
                                  "which would double the memory of a large evaluation")

    def ordered(self) -> dict[str, Tensor]:
        """Every state as one tensor in dataset-index order, gathered from all processes.

        The chunks are written straight into their sorted rows of one preallocated tensor and
        released as they go, so a 50k-image state never exists twice in memory. Under DDP the
        gathered states are merged and the process's own states restored afterwards.
        """
        self.sync(dist_sync_fn=self.dist_sync_fn)  # a no-op outside DDP
        synced = self._is_synced
        try:
            return self._merge_in_index_order()
        finally:
            if synced:
                self.unsync()

    def _merge_in_index_order(self) -> dict[str, Tensor]:
        index = _cat(self.index)
        if len(torch.unique(index)) != len(index):
            raise RuntimeError("an evaluation sample was seen twice; the evaluation sampler must not pad")
        order = torch.argsort(index)
        position = torch.empty_like(order)
        position[order] = torch.arange(len(index))
        result = {"index": index[order], **{name: getattr(self, name).clone() for name in self.sum_names}}
        for name in self.names:
            chunks = getattr(self, name)
            chunks = chunks if isinstance(chunks, list) else [chunks]  # after a DDP sync: one tensor
            merged = torch.empty((len(index), *chunks[0].shape[1:]), dtype=chunks[0].dtype)
            start = 0
            while chunks:
                chunk = chunks.pop(0)
                merged.index_copy_(0, position[start:start + len(chunk)], chunk)
                start += len(chunk)
            setattr(self, name, [merged])
            result[name] = merged
        self.index = [result["index"]]
        self._unmerged_items = self._unmerged_rows = 0
        return result


def _cat(states: list[Tensor] | Tensor) -> Tensor:
    return torch.cat(states) if isinstance(states, list) else states


class MetricSuite(IndexedSamples):
    """Fake-image features of one task, and the Inception Score's per-split sums; `score(real)` gives
    FID, KID, IS, kernel MMD and precision/recall.

    IS needs `expected_count`, the number of images the evaluation will see: each image's split is
    known from its index then (`distribution.split_of_each_sample`), and the logits need not be kept.
    """

    def __init__(self, settings: DistributionSettings | None = None, sync_device: torch.device | None = None,
                 is_unavailable: str | None = None, expected_count: int | None = None) -> None:
        super().__init__(("features",), sync_device)
        self.settings = settings or DistributionSettings()
        self.is_unavailable, self.expected_count, self.split_of = is_unavailable, expected_count, None
        splits = self.settings.is_splits
        if is_unavailable is None and (expected_count is None or expected_count < splits):
            self.is_unavailable = (f"needs at least {splits} images (one per split); got {expected_count}"
                                   if expected_count is not None else "the number of images was not given")
        if self.is_unavailable is None:
            self.split_of = D.split_of_each_sample(expected_count, splits, self.settings.seed)
            self.add_sum_state("is_probability_sums", torch.zeros(splits, IS_CLASSES, dtype=torch.float64))
            self.add_sum_state("is_neg_entropy_sums", torch.zeros(splits, dtype=torch.float64))
            self.add_sum_state("is_counts", torch.zeros(splits, dtype=torch.float64))

    def update(self, index: Tensor, features: Tensor, logits: Tensor | None = None) -> None:  # type: ignore[override]
        super().update(index, features=features)
        if self.split_of is not None:
            index, logits = index.long().cpu(), logits.detach().double().cpu()
            if int(index.max()) >= len(self.split_of):
                raise ValueError(f"image index {int(index.max())} beyond the expected {self.expected_count} images")
            split = self.split_of[index]
            probabilities = logits.softmax(dim=1)
            self.is_probability_sums.index_add_(0, split, probabilities)
            self.is_neg_entropy_sums.index_add_(0, split, (probabilities * logits.log_softmax(dim=1)).sum(dim=1))
            self.is_counts.index_add_(0, split, torch.ones(len(split), dtype=torch.float64))

    def score(self, real_features: Tensor) -> tuple[dict[str, float | None], dict[str, str]]:
        """Every distribution metric against the real features; also the reasons for unavailable ones."""
        fake = self.ordered()
        metrics, unavailable = distribution_metrics(real_features, fake["features"], self.settings)
        if self.split_of is not None and int(fake["is_counts"].sum()) != self.expected_count:
            self.is_unavailable = (f"{int(fake['is_counts'].sum())} of the expected {self.expected_count} images "
                                   "were evaluated (a limit_*_batches setting?); IS needs them all")
        if self.is_unavailable:
            metrics["is_mean"] = metrics["is_std"] = None
            unavailable["is"] = self.is_unavailable
        else:
            metrics["is_mean"], metrics["is_std"] = D.inception_score_from_sums(
                fake["is_probability_sums"], fake["is_neg_entropy_sums"], fake["is_counts"])
        return metrics, unavailable

    def bootstrap(self, real_features: Tensor, resample: BS.Resample,
                  metrics: dict[str, Any]) -> dict[str, np.ndarray]:
        """Replicates of FID, KID, kernel MMD^2 and MMD(Xu) over `resample` (see `metrics.bootstrap`).

        `metrics` are this task's scores (`score`): their bandwidths, fixed by the real set, are reused.
        """
        fake = self.ordered()["features"]
        counts = resample.image_counts
        if counts.shape[1] != len(fake):
            raise ValueError(f"bootstrap: {counts.shape[1]} resampled images for {len(fake)} evaluated ones")
        return BS.distribution_replicates(real_features, fake, counts, metrics.get("mmd_bandwidth"),
                                          metrics.get("mmd_xu_scale"))


def distribution_metrics(real: Tensor, fake: Tensor,
                         settings: DistributionSettings) -> tuple[dict[str, float | None], dict[str, str]]:
    """FID, KID, kernel MMD (two definitions), Wasserstein, 1-NN accuracy and precision/recall from features."""
    n_real, n_fake = len(real), len(fake)
    if min(n_real, n_fake) < 2:
        raise ValueError(f"distribution metrics need at least 2 real and 2 fake images (got {n_real}, {n_fake})")
    metrics: dict[str, float | None] = {"n_real": n_real, "n_fake": n_fake,
                                        "fid_rank_deficient": min(n_real, n_fake) < D.FID_FULL_RANK}
    unavailable: dict[str, str] = {}
    metrics["fid"] = D.frechet_distance_from_features(real, fake)

    subset = D.kid_subset_size(n_real, n_fake, settings.kid_subset_size)
    if settings.kid_subset_size is not None and subset < settings.kid_subset_size:
        log.warning(f"KID: kid_subset_size {settings.kid_subset_size} is larger than the sets "
                    f"({n_real} real, {n_fake} fake); using subsets of {subset}.")
    metrics["kid_subset_size"] = subset
    metrics["kid_mean"], metrics["kid_std"] = D.kernel_inception_distance(
        real, fake, subset, settings.kid_subsets, settings.seed)

    bandwidth = D.median_distance(real, settings.mmd_bandwidth_samples, settings.seed)
    metrics["mmd_bandwidth"] = bandwidth
    metrics["kernel_mmd2"] = D.gaussian_mmd2(real, fake, bandwidth)

    try:
        emd = TS.wasserstein_distance(real, fake, settings.wasserstein_max_samples, settings.seed)
        metrics["wasserstein"] = emd.distance
        metrics["wasserstein_n_real"], metrics["wasserstein_n_fake"] = emd.n_real, emd.n_fake
    except TS.EMDNotOptimalError as error:
        metrics["wasserstein"] = None
        unavailable["wasserstein"] = str(error)
    nn1, mmd_xu = TS.nearest_neighbour_accuracy_and_mmd_xu(real, fake)  # one pass over all pairs
    metrics["nn1_accuracy"], metrics["nn1_accuracy_real"], metrics["nn1_accuracy_fake"] = nn1.accuracy, nn1.real, nn1.fake
    metrics["mmd_xu"], metrics["mmd_xu_scale"] = mmd_xu.mmd, mmd_xu.scale

    if min(n_real, n_fake) <= settings.prc_neighborhood:
        unavailable["precision"] = unavailable["recall"] = (
            f"needs more than k={settings.prc_neighborhood} images per set")
        metrics["precision"] = metrics["recall"] = None
    else:
        metrics["precision"], metrics["recall"] = D.precision_recall(real, fake, settings.prc_neighborhood)
    return metrics, unavailable
