"""Evaluation speed: the full i2ibench suite against torch-fidelity's FID+KID on the same folders.

Run: `python benchmarks/metrics_speed.py [--n 100] [--size 128] [--repeats 3]` (or `make bench-speed`).
Both sides run in this one process, alternately, on the same images, with the same batch size
and the same Inception weights; each side builds its extractor inside the timed region.
Targets (issue 3): full suite <= 1.1x torch-fidelity; with the real features cached <= 0.55x.
Prints a table and writes results/perf/metrics_speed.json.

`--profile` instead breaks one evaluation of the same folders into its stages (set-up, decode,
uint8 conversion, the 128 -> 299 resize, the Inception convolutions, statistics, content metrics),
lists the Inception forward's operators by self time (torch.profiler), and times candidate
speed-ups of the Inception forward alone (batch 50, 128 -> 299 px), each with the largest
difference of its 2048-d features from the plain path; writes results/perf/metrics_profile.json.
The machine may be shared: each figure is the best of `--repeats` runs, and the load average is saved.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch_fidelity
from PIL import Image

from i2ibench import files
from i2ibench.data.embedded import materialize
from i2ibench.metrics.folder_eval import evaluate_folders
from i2ibench.metrics.inception import resolve_weights_path
from i2ibench.metrics.suite import DistributionSettings

REPO = Path(__file__).resolve().parents[1]


def make_folders(root: Path, n: int, size: int) -> dict[str, Path]:
    """n real photos, n 'translations' (sketches) and their n same-named ground truths, at size x size."""
    source = materialize("builtin", size=size)
    photos, sketches = sorted((source / "trainA").iterdir()), sorted((source / "trainB").iterdir())
    if min(len(photos), len(sketches)) < n:
        raise SystemExit(f"the built-in set has only {min(len(photos), len(sketches))} images per domain")
    folders = {name: root / name for name in ("real", "fake", "gt")}
    for path in folders.values():
        path.mkdir(parents=True)
    for i in range(n):
        shutil.copy(photos[i], folders["real"] / f"{i:04d}.png")
        shutil.copy(sketches[i], folders["fake"] / f"{i:04d}.png")
        shutil.copy(photos[-1 - i], folders["gt"] / f"{i:04d}.png")
    return folders


def time_torch_fidelity(folders: dict[str, Path], weights: Path, batch: int) -> float:
    start = time.perf_counter()
    torch_fidelity.calculate_metrics(input1=str(folders["fake"]), input2=str(folders["real"]), fid=True, kid=True,
                                     kid_subset_size=min(1000, len(os.listdir(folders["fake"]))), cuda=False,
                                     cache=False, verbose=False, batch_size=batch,
                                     feature_extractor_weights_path=str(weights))
    return time.perf_counter() - start


def time_suite(folders: dict[str, Path], weights: Path, batch: int, cached: bool) -> tuple[float, dict]:
    if not cached:
        shutil.rmtree(files.home() / "real-features", ignore_errors=True)
    start = time.perf_counter()
    record = evaluate_folders(folders["real"], folders["fake"], gt=folders["gt"], settings=DistributionSettings(),
                              weights=str(weights), lpips="alex", batch_size=batch)
    elapsed = time.perf_counter() - start
    assert record["timings"]["real_features_cached"] == cached
    return elapsed, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="images per folder")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None,
                        help="default results/perf/metrics_speed.json (--profile: metrics_profile.json)")
    parser.add_argument("--profile", action="store_true", help="where the evaluation time goes, and candidate speed-ups")
    parser.add_argument("--candidates", default="channels_last,cached_resize,jit_freeze,threads_1,overlap_decode,compile",
                        help="--profile: which candidate speed-ups to time")
    args = parser.parse_args()
    if args.profile:
        from metrics_profile import profile

        return profile(args, make_folders)
    args.out = args.out or REPO / "results" / "perf" / "metrics_speed.json"
    weights = resolve_weights_path()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["I2IBENCH_HOME"] = str(Path(tmp) / "home")
        folders = make_folders(Path(tmp) / "images", args.n, args.size)
        time_torch_fidelity(folders, weights, args.batch)  # warm-up: page cache, lazy imports
        runs = {"torch_fidelity_fid_kid": [], "suite_full": [], "suite_cached_real": []}
        for _ in range(args.repeats):  # alternate, so drift in machine speed hits all three alike
            runs["torch_fidelity_fid_kid"].append(time_torch_fidelity(folders, weights, args.batch))
            elapsed, record = time_suite(folders, weights, args.batch, cached=False)
            runs["suite_full"].append(elapsed)
            runs["suite_cached_real"].append(time_suite(folders, weights, args.batch, cached=True)[0])
    median = {name: statistics.median(values) for name, values in runs.items()}
    base = median["torch_fidelity_fid_kid"]
    images = 2 * args.n
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "setup": {"images_per_folder": args.n, "size": args.size, "batch": args.batch, "repeats": args.repeats,
                  "suite_metrics": [k for k, v in record["metrics"]["images"].items() if v is not None],
                  "suite_unavailable": sorted(record["unavailable"]["images"])},
        "seconds": runs, "median_s": median,
        "ratio_to_torch_fidelity": {name: value / base for name, value in median.items()},
        "images_per_s": {"torch_fidelity_fid_kid": images / base, "suite_full": images / median["suite_full"],
                         "suite_cached_real": args.n / median["suite_cached_real"]},
        "suite_breakdown_s": record["timings"],
        "targets": {"suite_full": 1.1, "suite_cached_real": 0.55},
    }
    files.write_json(args.out, result)
    print(f"{'':26}{'median s':>10}{'ratio':>8}{'img/s':>8}")
    for name in runs:
        print(f"{name:26}{median[name]:10.2f}{median[name] / base:8.3f}{result['images_per_s'][name]:8.1f}")
    print(f"targets: suite_full <= 1.1, suite_cached_real <= 0.55   ({args.n}+{args.n} images, {args.size} px, "
          f"{os.cpu_count()} cores)\nwritten {args.out}")


if __name__ == "__main__":
    main()
