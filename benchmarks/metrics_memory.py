"""Host memory of a large evaluation: every distribution metric at N real + N fake images.

Run: `python benchmarks/metrics_memory.py [--n 50000]`. The features are synthetic (Inception
on 50k images takes hours on a CPU) but flow through the same MetricSuite states, in batches of
64 as an evaluation feeds them, and through the same metric functions as MetricSuite.score, one
at a time. Prints each step's time and extra resident memory, and the peak; target (issue 3):
under 2 GB per process at N = 50k. The allocator is handled as in an evaluation (`--allocator`).
Writes results/perf/metrics_memory.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import threading
import time
from pathlib import Path

import torch

from i2ibench import allocator, files
from i2ibench.metrics import distribution as D
from i2ibench.metrics.suite import DistributionSettings, MetricSuite

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """The largest resident size seen while a block runs (sampled every 5 ms by a thread)."""

    def __enter__(self) -> "RssSampler":
        self.start, self.peak, self._running = current_rss_mb(), current_rss_mb(), True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, current_rss_mb())
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, current_rss_mb())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--metrics", default="fid,kid,is,mmd,precision_recall",
                        help="which scoring steps to run (kernel MMD alone takes about 9 minutes at 50k here)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "perf" / "metrics_memory.json")
    parser.add_argument("--allocator", choices=("evaluator", "glibc"), default="evaluator",
                        help="evaluator: as an evaluation runs, freed memory kept while features accumulate and "
                             "released before scoring (i2ibench.allocator); glibc: its default policy throughout")
    args = parser.parse_args()
    if args.allocator == "evaluator":
        assert allocator.keep_freed_memory(), "the allocator policy could not be set"
    generator = torch.Generator().manual_seed(0)
    steps: dict[str, float] = {"baseline_rss_mb": peak_rss_mb()}

    start = time.perf_counter()
    real = torch.rand(args.n, 2048, generator=generator)  # Inception pool3 features are non-negative
    suite = MetricSuite(DistributionSettings(), expected_count=args.n)
    for first in range(0, args.n, args.batch):
        count = min(args.batch, args.n - first)
        suite.update(torch.arange(first, first + count), features=torch.rand(count, 2048, generator=generator) * 1.1,
                     logits=torch.randn(count, 1008, generator=generator))
    steps["accumulate_s"] = time.perf_counter() - start
    steps["after_accumulate_rss_mb"] = peak_rss_mb()
    allocator.release_freed_memory()  # as Evaluator.finish does before scoring (a no-op under --allocator glibc)

    fake = suite.ordered()
    steps["after_merge_rss_mb"] = current_rss_mb()
    settings = suite.settings
    subset = D.kid_subset_size(len(real), len(fake["features"]), settings.kid_subset_size)
    metric_steps = {
        "fid": lambda: D.frechet_distance_from_features(real, fake["features"]),
        "kid": lambda: D.kernel_inception_distance(real, fake["features"], subset, settings.kid_subsets, 0),
        "is": lambda: D.inception_score_from_sums(fake["is_probability_sums"], fake["is_neg_entropy_sums"],
                                                  fake["is_counts"]),
        "mmd": lambda: D.gaussian_mmd2(real, fake["features"], D.median_distance(real, 2000, 0)),
        "precision_recall": lambda: D.precision_recall(real, fake["features"], settings.prc_neighborhood),
    }
    metrics = {}
    chosen = args.metrics.split(",")
    metric_steps = {name: step for name, step in metric_steps.items() if name in chosen}
    for name, compute in metric_steps.items():  # the steps of MetricSuite.score, one at a time
        start = time.perf_counter()
        with RssSampler() as rss:
            metrics[name] = compute()
        steps[f"{name}_s"] = time.perf_counter() - start
        steps[f"{name}_extra_rss_mb"] = rss.peak - rss.start
        print(f"{name:18s}{steps[f'{name}_s']:8.1f} s  +{rss.peak - rss.start:6.0f} MB", flush=True)
    steps["peak_rss_mb"] = peak_rss_mb()
    result = {"n": args.n, "machine": {"cpu": platform.machine(), "cores": os.cpu_count(),
                                       "torch": torch.__version__, "allocator": args.allocator},
              "steps": steps, "metrics": metrics, "metrics_run": chosen, "target_peak_rss_mb": 2048}
    files.write_json(args.out, result)
    for name, value in steps.items():
        print(f"{name:26}{value:10.1f}")
    print(f"target: peak_rss_mb < 2048 at n = 50000; written {args.out}")


if __name__ == "__main__":
    main()
