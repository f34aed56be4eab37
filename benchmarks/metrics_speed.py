"""Evaluation speed: the full i2ibench suite against torch-fidelity's FID+KID on the same folders.

Run: `python benchmarks/metrics_speed.py [--n 100] [--size 128] [--repeats 3]` (or `make bench-speed`).
Both sides run alternately in one run, on the same images, with the same batch size and the same
Inception weights; each timed call runs in a fresh process of its own (imports done, then one cold
call that builds its extractor inside the timed region), so that neither side inherits the
other's state. torch-fidelity runs as users run it; the suite as it always runs, keeping freed
memory for reuse while it extracts features (`i2ibench.allocator`). To show how much of the gain
is that policy's, torch-fidelity is also timed under it.
Target (issue 18): the full suite (FID, KID, kernel MMD, precision/recall, IS where the weights
allow, SSIM, PSNR, LPIPS where its weights load) <= 0.5x torch-fidelity's FID + KID, with FID and
KID equal to torch-fidelity's within 1e-4 relative (checked here, every repeat). Also timed: the
in-training evaluation path (the Evaluator that the EvaluationCallback drives, fed translations
already in memory as Lightning's loop feeds them), as seconds per evaluated image.
Prints a table and writes results/perf/metrics_speed.json, with the load average before and after.

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch_fidelity

from i2ibench import files
from i2ibench.data.embedded import materialize
from i2ibench.data.images import load_rgb
from i2ibench.data.transforms import to_model_range
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


def time_torch_fidelity(folders: dict[str, Path], weights: Path, batch: int) -> tuple[float, dict]:
    start = time.perf_counter()
    metrics = torch_fidelity.calculate_metrics(input1=str(folders["fake"]), input2=str(folders["real"]), fid=True, kid=True,
                                     kid_subset_size=min(1000, len(os.listdir(folders["fake"]))), cuda=False,
                                     cache=False, verbose=False, batch_size=batch,
                                     feature_extractor_weights_path=str(weights))
    return time.perf_counter() - start, metrics


def agreement(theirs: dict, ours: dict) -> dict[str, float]:
    """Relative differences of the suite's FID and KID mean / std from torch-fidelity's.

    KID's std is compared relative to the KID mean: with subsets as large as the sets (100 of 100)
    every subset is a permutation of the sets, the std is rounding noise (torch-fidelity's float32
    ~1e-9, float64 ~1e-17) and its own relative difference means nothing.
    """
    pairs = {"fid": "frechet_inception_distance", "kid_mean": "kernel_inception_distance_mean",
             "kid_std": "kernel_inception_distance_std"}
    kid_scale = abs(theirs["kernel_inception_distance_mean"])
    return {name: abs(ours[name] - theirs[key]) / max(abs(theirs[key]), kid_scale if name == "kid_std" else 0.0)
            for name, key in pairs.items()}


def time_callback_path(folders: dict[str, Path], weights: Path, batch: int, cached: bool) -> float:
    """Seconds per evaluated image of the in-training evaluation (the Evaluator the EvaluationCallback
    drives): translations in memory in [-1, 1] with their sources, real features extracted or cached."""
    from i2ibench.metrics.evaluator import Evaluator

    if not cached:
        shutil.rmtree(files.home() / "real-features", ignore_errors=True)
    fakes, sources = (torch.stack([to_model_range(load_rgb(p)) for p in sorted(folders[role].iterdir())])
                      for role in ("fake", "gt"))
    real_paths = sorted(folders["real"].iterdir())
    evaluator = Evaluator(str(weights), DistributionSettings(), "alex")  # built once, in the callback's setup
    start = time.perf_counter()
    evaluator.begin({"images": ("source",)}, {"images": len(fakes)})
    for index in torch.arange(len(fakes)).split(batch):
        evaluator.update("images", index, fakes[index], source=sources[index])
    real, hit = evaluator.real_features(real_paths, None, lambda: (
        {"image": torch.stack([to_model_range(load_rgb(real_paths[i])) for i in index]), "index": index}
        for index in torch.arange(len(real_paths)).split(batch)))
    assert hit == cached
    evaluator.finish({"images": real})
    return (time.perf_counter() - start) / len(fakes)


def time_suite(folders: dict[str, Path], weights: Path, batch: int, cached: bool) -> tuple[float, dict]:
    if not cached:
        shutil.rmtree(files.home() / "real-features", ignore_errors=True)
    start = time.perf_counter()
    record = evaluate_folders(folders["real"], folders["fake"], gt=folders["gt"], settings=DistributionSettings(),
                              weights=str(weights), lpips="alex", batch_size=batch)
    elapsed = time.perf_counter() - start
    assert record["timings"]["real_features_cached"] == cached
    return elapsed, record


JOBS = ("torch_fidelity", "torch_fidelity_policy", "suite", "suite_cached_real", "callback")


def run_job(job: str, folders: dict[str, Path], weights: Path, batch: int) -> dict:
    """One timed call in this (fresh) process; see `JOBS`. Writes nothing; returns seconds and values."""
    if job == "torch_fidelity_policy":  # the like-for-like check: the suite's allocator policy, held throughout
        from i2ibench.allocator import keep_freed_memory

        assert keep_freed_memory(), "the allocator policy could not be set"
    if job.startswith("torch_fidelity"):
        elapsed, metrics = time_torch_fidelity(folders, weights, batch)
        return {"seconds": elapsed, "values": {k: float(v) for k, v in metrics.items()}}
    if job == "callback":
        return {"seconds_per_image": {"real_features_extracted": time_callback_path(folders, weights, batch, False),
                                      "real_features_cached": time_callback_path(folders, weights, batch, True)}}
    elapsed, record = time_suite(folders, weights, batch, cached=job == "suite_cached_real")
    metrics = record["metrics"]["images"]
    return {"seconds": elapsed, "values": {k: metrics[k] for k in ("fid", "kid_mean", "kid_std")},
            "timings": record["timings"], "suite_metrics": [k for k, v in metrics.items() if v is not None],
            "suite_unavailable": sorted(record["unavailable"]["images"])}


def in_fresh_process(job: str, root: Path, batch: int) -> dict:
    command = [sys.executable, __file__, "--job", job, "--folders", str(root), "--batch", str(batch)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{job} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="images per folder")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None,
                        help="default results/perf/metrics_speed.json (--profile: metrics_profile.json)")
    parser.add_argument("--profile", action="store_true", help="where the evaluation time goes, and candidate speed-ups")
    parser.add_argument("--candidates", default="fast_path,allocator,channels_last,cached_resize,jit_freeze,threads_1,overlap_decode,compile",
                        help="--profile: which candidate speed-ups to time")
    parser.add_argument("--job", choices=JOBS, help=argparse.SUPPRESS)
    parser.add_argument("--folders", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        folders = {name: args.folders / name for name in ("real", "fake", "gt")}
        print(json.dumps(run_job(args.job, folders, resolve_weights_path(), args.batch)))
        return
    if args.profile:
        from metrics_profile import profile

        return profile(args, make_folders)
    args.out = args.out or REPO / "results" / "perf" / "metrics_speed.json"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["I2IBENCH_HOME"] = str(Path(tmp) / "home")  # the children's real-feature cache
        root = Path(tmp) / "images"
        make_folders(root, args.n, args.size)
        in_fresh_process("torch_fidelity", root, args.batch)  # warm-up: the page cache (images, weights)
        runs: dict[str, list[float]] = {job: [] for job in JOBS if job != "callback"}
        rel_diffs = []
        for _ in range(args.repeats):  # alternate, so drift in machine speed hits every side alike
            results = {}
            for job in runs:  # `suite` before `suite_cached_real`, which reads the features it cached
                results[job] = in_fresh_process(job, root, args.batch)
                runs[job].append(results[job]["seconds"])
            theirs, suite = results["torch_fidelity"], results["suite"]
            rel_diffs.append(agreement(theirs["values"], suite["values"]))
            values = {"torch_fidelity": theirs["values"], "suite": suite["values"]}
            print("repeat: " + ", ".join(f"{name} {times[-1]:.1f} s" for name, times in runs.items())
                  + f"; load average {os.getloadavg()[0]:.1f}", flush=True)
        per_image = in_fresh_process("callback", root, args.batch)["seconds_per_image"]
    median = {name: statistics.median(times) for name, times in runs.items()}
    base = median["torch_fidelity"]
    ratios = {name: value / base for name, value in median.items()}
    paired = [s / t for s, t in zip(runs["suite"], runs["torch_fidelity"])]
    like_for_like = median["suite"] / median["torch_fidelity_policy"]
    worst = {name: max(d[name] for d in rel_diffs) for name in rel_diffs[0]}
    images = 2 * args.n
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "setup": {"images_per_folder": args.n, "size": args.size, "batch": args.batch, "repeats": args.repeats,
                  "each_call": "a fresh process; imports done, one cold call timed",
                  "suite_metrics": suite["suite_metrics"], "suite_unavailable": suite["suite_unavailable"],
                  "allocator": "torch_fidelity: glibc's default; torch_fidelity_policy: i2ibench.allocator's policy "
                               "throughout; the suite: its own (the policy while it extracts features)"},
        "seconds": runs, "median_s": median,
        "ratio_to_torch_fidelity": ratios,
        "ratio_suite_per_repeat": paired,
        "ratio_suite_to_torch_fidelity_same_allocator": like_for_like,
        "max_rel_diff_to_torch_fidelity": worst,
        "values_last_repeat": values,
        "images_per_s": {name: (args.n if name == "suite_cached_real" else images) / median[name] for name in runs},
        "evaluation_callback_s_per_image": per_image,
        "suite_breakdown_s": suite["timings"],
        "targets": {"suite": 0.5, "max_rel_diff": 1e-4},
    }
    files.write_json(args.out, result)
    print(f"{'':26}{'median s':>10}{'ratio':>8}{'img/s':>8}")
    for name in runs:
        print(f"{name:26}{median[name]:10.2f}{ratios[name]:8.3f}{result['images_per_s'][name]:8.1f}")
    print("suite / torch-fidelity per repeat: " + ", ".join(f"{r:.3f}" for r in paired)
          + f"; against torch-fidelity under the same allocator policy: {like_for_like:.3f}")
    print("largest relative difference from torch-fidelity: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    print(f"evaluation (callback path), s per evaluated image: {per_image['real_features_extracted']:.3f} "
          f"(real features extracted), {per_image['real_features_cached']:.3f} (cached)")
    print(f"targets: suite <= 0.5, differences <= 1e-4   ({args.n}+{args.n} images, {args.size} px, "
          f"{os.cpu_count()} cores, load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f})\nwritten {args.out}")
    if max(worst.values()) > 1e-4:
        raise SystemExit(f"the suite's FID / KID differ from torch-fidelity's by more than 1e-4: {worst}")


if __name__ == "__main__":
    main()
