"""MetricSuite: every distribution metric of one task from ONE Inception pass per image.

States are torchmetrics list states (features, logits and each sample's dataset index), so DDP
sync is torchmetrics' own all-gather. After sync the samples are put back in dataset order by
their index: the numbers then depend neither on the batch size nor on how the evaluation set
was sharded over processes. Features stay float32 on the CPU (50k images: 400 MB per set).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

from i2ibench.metrics import distribution as D


@dataclass(frozen=True)
class DistributionSettings:
    """The knobs of the distribution metrics; all of them go into the protocol card."""

    kid_subset_size: int | None = None  # None: min(1000, N_real, N_fake)
    kid_subsets: int = 100
    is_splits: int = 10
    prc_neighborhood: int = 3
    mmd_bandwidth_samples: int = 2000
    seed: int = 0

    def card(self) -> dict[str, Any]:
        card = asdict(self)
        card["kid_kernel"] = "polynomial (x.y/d + 1)^3, unbiased MMD^2 (Binkowski et al. 2018)"
        card["mmd_kernel"] = ("gaussian exp(-|x-y|^2 / 2 s^2), unbiased MMD^2; s = median pairwise distance "
                              f"of the real features (<= {self.mmd_bandwidth_samples} samples, seeded)")
        card["precision_recall"] = (f"k-NN manifolds, k={self.prc_neighborhood} (Kynkaanniemi et al. 2019), on the "
                                    "Inception pool3 features (the paper used VGG-16 fc2)")
        card["statistics_dtype"] = "float64"
        return card


def device_sync_fn(device: torch.device | None) -> Callable | None:
    """All-gather through `device` (NCCL gathers only CUDA tensors), results back on the CPU."""
    if device is None or device.type == "cpu":
        return None

    def gather(tensor: Tensor, group: Any = None) -> list[Tensor]:
        return [t.cpu() for t in gather_all_tensors(tensor.to(device), group)]

    return gather


class IndexedSamples(Metric):
    """Per-sample tensors keyed by dataset index; `compute()` returns them in index order, synced."""

    full_state_update = False

    def __init__(self, names: tuple[str, ...], sync_device: torch.device | None = None) -> None:
        super().__init__(dist_sync_fn=device_sync_fn(sync_device))
        self.names = names
        self.add_state("index", default=[], dist_reduce_fx="cat")
        for name in names:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, index: Tensor, **values: Tensor) -> None:
        self.index.append(index.detach().long().cpu())
        for name in self.names:
            getattr(self, name).append(values[name].detach().float().cpu())

    def compute(self) -> dict[str, Tensor]:
        index = _cat(self.index)
        order = torch.argsort(index)
        if len(torch.unique(index)) != len(index):
            raise RuntimeError("an evaluation sample was seen twice; the evaluation sampler must not pad")
        return {"index": index[order], **{name: _cat(getattr(self, name))[order] for name in self.names}}


def _cat(states: list[Tensor] | Tensor) -> Tensor:
    return torch.cat(states) if isinstance(states, list) else states


class MetricSuite(IndexedSamples):
    """Fake-image features and logits of one task; `score(real)` gives FID, KID, IS, MMD, P/R."""

    def __init__(self, settings: DistributionSettings | None = None, sync_device: torch.device | None = None,
                 is_unavailable: str | None = None) -> None:
        super().__init__(("features", "logits"), sync_device)
        self.settings = settings or DistributionSettings()
        self.is_unavailable = is_unavailable

    def score(self, real_features: Tensor) -> tuple[dict[str, float | None], dict[str, str]]:
        """Every distribution metric against the real features; also the reasons for unavailable ones."""
        fake = self.compute()
        return distribution_metrics(real_features, fake["features"], fake["logits"], self.settings,
                                    self.is_unavailable)


def distribution_metrics(real: Tensor, fake: Tensor, fake_logits: Tensor | None, settings: DistributionSettings,
                         is_unavailable: str | None = None) -> tuple[dict[str, float | None], dict[str, str]]:
    """FID, KID, IS, kernel MMD and precision/recall from features (the suite's one computation)."""
    n_real, n_fake = len(real), len(fake)
    if min(n_real, n_fake) < 2:
        raise ValueError(f"distribution metrics need at least 2 real and 2 fake images (got {n_real}, {n_fake})")
    metrics: dict[str, float | None] = {"n_real": n_real, "n_fake": n_fake,
                                        "fid_rank_deficient": min(n_real, n_fake) < D.FID_FULL_RANK}
    unavailable: dict[str, str] = {}
    metrics["fid"] = D.frechet_distance(D.gaussian_statistics(real), D.gaussian_statistics(fake))

    subset = D.kid_subset_size(n_real, n_fake, settings.kid_subset_size)
    metrics["kid_subset_size"] = subset
    metrics["kid_mean"], metrics["kid_std"] = D.kernel_inception_distance(
        real, fake, subset, settings.kid_subsets, settings.seed)

    if is_unavailable:
        unavailable["is"] = is_unavailable
    elif fake_logits is None or n_fake < settings.is_splits:
        unavailable["is"] = f"needs at least {settings.is_splits} images (one per split); got {n_fake}"
    if "is" in unavailable:
        metrics["is_mean"] = metrics["is_std"] = None
    else:
        metrics["is_mean"], metrics["is_std"] = D.inception_score(fake_logits, settings.is_splits, settings.seed)

    bandwidth = D.median_distance(real, settings.mmd_bandwidth_samples, settings.seed)
    metrics["mmd_bandwidth"] = bandwidth
    metrics["kernel_mmd2"] = D.gaussian_mmd2(real, fake, bandwidth)

    if min(n_real, n_fake) <= settings.prc_neighborhood:
        unavailable["precision"] = unavailable["recall"] = (
            f"needs more than k={settings.prc_neighborhood} images per set")
        metrics["precision"] = metrics["recall"] = None
    else:
        metrics["precision"], metrics["recall"] = D.precision_recall(real, fake, settings.prc_neighborhood)
    return metrics, unavailable
