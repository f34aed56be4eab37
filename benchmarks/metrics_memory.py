"""Host memory of a large evaluation: every distribution metric at N real + N fake images.

Run: `python benchmarks/metrics_memory.py [--n 50000]`. The features are synthetic (Inception
on 50k images takes hours on a CPU) but flow through the same MetricSuite states, in batches of
64 as an evaluation feeds them, and through the same scoring code. Prints peak RSS and the time
of each step; target (issue 3): under 2 GB per process at N = 50k.
Writes results/perf/metrics_memory.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import torch

from i2ibench import files
from i2ibench.metrics.suite import DistributionSettings, MetricSuite

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "perf" / "metrics_memory.json")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    steps: dict[str, float] = {"baseline_rss_mb": peak_rss_mb()}

    start = time.perf_counter()
    real = torch.rand(args.n, 2048, generator=generator)  # Inception pool3 features are non-negative
    suite = MetricSuite(DistributionSettings())
    for first in range(0, args.n, args.batch):
        count = min(args.batch, args.n - first)
        suite.update(torch.arange(first, first + count), features=torch.rand(count, 2048, generator=generator) * 1.1,
                     logits=torch.randn(count, 1008, generator=generator))
    steps["accumulate_s"] = time.perf_counter() - start
    steps["after_accumulate_rss_mb"] = peak_rss_mb()

    start = time.perf_counter()
    metrics, unavailable = suite.score(real)
    steps["score_s"] = time.perf_counter() - start
    steps["peak_rss_mb"] = peak_rss_mb()
    result = {"n": args.n, "machine": {"cpu": platform.machine(), "cores": os.cpu_count(),
                                       "torch": torch.__version__},
              "steps": steps, "metrics": metrics, "target_peak_rss_mb": 2048}
    files.write_json(args.out, result)
    for name, value in steps.items():
        print(f"{name:26}{value:10.1f}")
    print(f"target: peak_rss_mb < 2048 at n = 50000; written {args.out}")


if __name__ == "__main__":
    main()
