"""Evaluator: the one evaluation protocol, shared by the EvaluationCallback and `i2ibench eval`.

It owns the Inception extractor, the LPIPS network and the settings, accumulates each task's
translations (features + content metrics), gets the real reference features (from the disk
cache when possible) and turns all of it into metrics and a protocol card.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import Tensor

from i2ibench import allocator
from i2ibench.metrics import bootstrap as BS
from i2ibench.metrics import cache
from i2ibench.metrics.content import CONTENT_CARD, ContentMetrics, load_lpips
from i2ibench.metrics.inception import InceptionExtractor, to_uint8
from i2ibench.metrics.suite import DistributionSettings, IndexedSamples, MetricSuite

LPIPS_CHOICES = ("alex", "vgg", "squeeze", "random-alex", "off")


class Evaluator:
    """Args:
        weights: Inception weights file (None: $I2IBENCH_INCEPTION_WEIGHTS, else the official download).
        settings: KID / IS / MMD / precision-recall settings.
        lpips: LPIPS backbone (alex, vgg, squeeze), `random-alex` (plumbing tests only) or `off`.
    """

    def __init__(self, weights: str | Path | None = None, settings: DistributionSettings | None = None,
                 lpips: str = "alex", device: torch.device | str = "cpu") -> None:
        if lpips not in LPIPS_CHOICES:
            raise ValueError(f"lpips must be one of {LPIPS_CHOICES}, not {lpips!r}")
        self.settings = settings or DistributionSettings()
        self.extractor = InceptionExtractor(weights, device)
        if lpips == "off":
            self.lpips_model, self.lpips_status = None, "LPIPS switched off (lpips: off)"
        else:
            self.lpips_model, self.lpips_status = load_lpips(lpips.removeprefix("random-"), lpips.startswith("random-"))
        self.suites: dict[str, MetricSuite] = {}
        self.content: dict[str, ContentMetrics] = {}
        self.timings: dict[str, float] = {}
        self.styles: dict[str, int] = {}  # outputs per source of each task (K > 1: multi-style)
        self._sync_device: torch.device | None = None  # set by `begin`; real_features may come first

    @property
    def device(self) -> torch.device:
        return self.extractor.device

    def to(self, device: torch.device | str) -> "Evaluator":
        self.extractor.to(device)
        return self

    # -- accumulate ----------------------------------------------------------------------------
    def begin(self, references: dict[str, tuple[str, ...]], counts: dict[str, int],
              sync_device: torch.device | None = None, diversity: tuple[str, ...] = ()) -> None:
        """Start a new evaluation; `references[task]` names the content references of each task,
        `counts[task]` the number of translations it will produce, and the tasks in `diversity`
        translate each source K times (N x K outputs, LPIPS diversity)."""
        allocator.keep_freed_memory()  # until `finish`: batches reuse freed memory (see i2ibench.allocator)
        unavailable = self.extractor.weights.is_unavailable_reason
        self.suites = {task: MetricSuite(self.settings, sync_device, unavailable, counts[task]) for task in references}
        self.content = {task: ContentMetrics(refs, self.lpips_model, sync_device, task in diversity)
                        for task, refs in references.items()}
        self.timings = {"features_s": 0.0, "content_s": 0.0, "real_features_s": 0.0, "scores_s": 0.0,
                        "bootstrap_s": 0.0}
        self.styles = {task: 1 for task in references}
        self._sync_device = sync_device

    @torch.no_grad()
    def update(self, task: str, index: Tensor, fake: Tensor, **references: Tensor) -> None:
        """One batch of translations of `task` (in [-1, 1]), with their dataset indices and references.

        N x K x 3 x H x W translations (K styles per source) count as N * K images for the
        distribution metrics, indexed source * K + k so that their order is the dataset's.
        """
        start = time.perf_counter()
        flat, flat_index = fake, index
        if fake.dim() == 5:
            styles = self.styles[task] = fake.shape[1]
            flat = fake.flatten(0, 1)
            flat_index = (index.view(-1, 1) * styles + torch.arange(styles, device=index.device)).flatten()
        features, logits = self.extractor(to_uint8(flat))
        self.suites[task].update(flat_index, features=features, logits=logits)
        self.timings["features_s"] += time.perf_counter() - start
        start = time.perf_counter()
        self.content[task].update(index, fake, **references)  # `background_mask` rides along with the images
        self.timings["content_s"] += time.perf_counter() - start

    # -- real images ---------------------------------------------------------------------------
    @torch.no_grad()
    def real_features(self, paths: list[Path], image_size: int | None, batches: Callable[[], Iterable[dict]],
                      agree: Callable[[bool], bool] = lambda hit: hit,
                      is_writer: bool = True, barrier: Callable[[], None] = lambda: None) -> tuple[Tensor, bool]:
        """Features of the real images at `paths`, from the cache or extracted (and then cached).

        `batches()` yields {`image`, `index`} (this process's share under DDP); `agree` makes every
        process take the same cache decision (rank 0's), `is_writer` marks the one that writes it.
        """
        start = time.perf_counter()
        with allocator.freed_memory_kept():  # also when called outside begin..finish
            key = cache.features_key(paths, image_size, self.extractor.weights.sha256)
            hit = agree(cache.cache_path(key).is_file())
            if hit:
                features = cache.load(key)
            else:
                store = IndexedSamples(("features",), self._sync_device)
                for batch in batches():
                    store.update(batch["index"], features=self.extractor(to_uint8(batch["image"]))[0])
                features = store.ordered()["features"]
                if is_writer:
                    cache.save(key, features, paths)
                barrier()
        self.timings["real_features_s"] = self.timings.get("real_features_s", 0.0) + time.perf_counter() - start
        if len(features) != len(paths):
            raise RuntimeError(f"real features: {len(features)} for {len(paths)} images")
        return features, hit

    # -- results -------------------------------------------------------------------------------
    def finish(self, real_features: dict[str, Tensor]) -> tuple[dict, dict]:
        """Metrics and unavailable-metric reasons per task, given each task's real features.

        With `settings.bootstrap_resamples`, each task's metrics also hold `intervals` ({metric: [lo, hi]},
        the bootstrap percentile interval over the evaluated images) and `bootstrap_replicates` ({metric:
        base64 float32 replicates}, for paired comparisons); the other keys are unchanged.
        """
        allocator.release_freed_memory()  # the features are in; scoring a large N runs under glibc's policy
        metrics, unavailable = {}, {}
        for task, suite in self.suites.items():
            start = time.perf_counter()
            values, reasons = suite.score(real_features[task])
            values.update(self.content[task].means())
            if self.lpips_model is None:
                reasons.update({name: self.lpips_status for name in values if name.startswith("lpips_")})
            self.timings["scores_s"] += time.perf_counter() - start
            if self.settings.bootstrap_resamples:
                start = time.perf_counter()
                values.update(self._bootstrap(task, real_features[task], values))
                self.timings["bootstrap_s"] += time.perf_counter() - start
            metrics[task], unavailable[task] = values, reasons
        return metrics, unavailable

    def _bootstrap(self, task: str, real_features: Tensor, values: dict) -> dict:
        """`intervals` and `bootstrap_replicates` of one task: one set of resamples for all its metrics."""
        n_sources = len(self.content[task].ordered()["index"])
        resample = BS.Resample.draw(n_sources, self.settings.bootstrap_resamples, self.settings.seed, task,
                                    self.styles.get(task, 1))
        replicates = {**self.suites[task].bootstrap(real_features, resample, values),
                      **self.content[task].bootstrap(resample)}
        return BS.record_entries(replicates, values, self.settings.bootstrap_level,
                                 resample.describe(task, self.settings.seed))

    def card(self, image_size: int | None) -> dict:
        """The protocol card saved with every number."""
        return {"image_size": image_size, **self.extractor.card(), **self.settings.card(), **CONTENT_CARD,
                "lpips": self.lpips_status,
                "fid_note": "FID with fewer than 2048 images per set uses a rank-deficient covariance "
                            "(flagged per task as fid_rank_deficient); compare such numbers only at equal N"}
