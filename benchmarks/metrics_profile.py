"""`metrics_speed.py --profile`: where the evaluation time goes, and what candidate speed-ups give.

Stages of one evaluation of n real + n fake images (with n same-named ground truths), timed
apart: one-time set-up (extractor: weights sha256 + load; LPIPS), decoding, the uint8 conversion,
torch-fidelity's TF1-bilinear resize to 299 px, the Inception convolutions, the statistics and
the content metrics. Then the Inception forward's operators by self time (torch.profiler, one
batch), and candidate speed-ups of the forward alone, each against the plain path's features.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader

from i2ibench import files
from i2ibench.data.images import load_rgb
from i2ibench.data.transforms import to_model_range
from i2ibench.metrics.content import ContentMetrics, load_lpips
from i2ibench.metrics.folder_eval import FolderImages
from i2ibench.metrics.inception import InceptionExtractor, full_precision, resolve_weights_path, to_uint8
from i2ibench.metrics.suite import DistributionSettings, distribution_metrics
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

REPO = Path(__file__).resolve().parents[1]


def best_of(repeats: int, run: Callable[[], object]) -> tuple[float, object]:
    """The fastest of `repeats` runs (a shared machine only ever adds time) and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def batches(images: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [images[i:i + size] for i in range(0, len(images), size)]


def resized(model, x_uint8: torch.Tensor) -> torch.Tensor:
    """What the extractor feeds its first convolution: TF1-bilinear to 299, then (x - 128) / 128."""
    x = interpolate_bilinear_2d_like_tensorflow1x(x_uint8.float(), size=(299, 299), align_corners=False)
    return (x - 128) / 128


def stages(folders: dict[str, Path], weights: Path, batch: int, repeats: int) -> tuple[dict, dict]:
    """Seconds per stage of one evaluation (best of `repeats`), and the tensors the candidates reuse."""
    out: dict[str, float] = {}
    start = time.perf_counter()
    extractor = InceptionExtractor(weights, fast=False)  # torch-fidelity's forward: the baseline of the candidates
    out["setup_extractor_s"] = time.perf_counter() - start  # sha256 of the weights + load (once per process)
    start = time.perf_counter()
    lpips_model, lpips_status = load_lpips("alex")
    out["setup_lpips_s"] = time.perf_counter() - start
    paths = {role: sorted(folder.iterdir()) for role, folder in folders.items()}
    out["decode_s"], decoded = best_of(repeats, lambda: {role: torch.stack([to_model_range(load_rgb(p)) for p in ps])
                                                        for role, ps in paths.items()})
    out["to_uint8_s"], uint8 = best_of(repeats, lambda: {role: to_uint8(decoded[role]) for role in ("real", "fake")})
    every = torch.cat([uint8["real"], uint8["fake"]])
    with torch.no_grad(), full_precision():
        out["resize_299_s"], _ = best_of(repeats, lambda: [resized(extractor.model, b) for b in batches(every, batch)])
        out["inception_total_s"], _ = best_of(repeats, lambda: [extractor(b) for b in batches(every, batch)])
    out["inception_convolutions_s"] = out["inception_total_s"] - out["resize_299_s"]
    real = torch.cat([extractor(b)[0] for b in batches(uint8["real"], batch)])
    fake = torch.cat([extractor(b)[0] for b in batches(uint8["fake"], batch)])
    out["statistics_s"], _ = best_of(repeats, lambda: distribution_metrics(real, fake, DistributionSettings()))

    def content() -> None:
        metric = ContentMetrics(("gt",), lpips_model)
        for index in batches(torch.arange(len(decoded["fake"])), batch):
            metric.update(index, decoded["fake"][index], gt=decoded["gt"][index])
        metric.means()

    out["content_s"], _ = best_of(repeats, content)
    counted = [k for k in out if not k.startswith("setup") and k != "inception_total_s"]
    out["sum_of_stages_s"] = sum(out[k] for k in counted)
    return out, {"extractor": extractor, "uint8": uint8, "lpips": lpips_status}


def operators(model, x_uint8: torch.Tensor, top: int = 12) -> list[dict]:
    """The Inception forward's operators by self CPU time, one batch (`model`: any callable on uint8 images)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), full_precision(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x_uint8)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / total,
             "calls": e.count} for e in events[:top]]


def candidates(extractor, x_uint8: torch.Tensor, names: list[str], repeats: int, folder: Path, batch: int) -> dict:
    """Seconds for one batch through the forward, per candidate, and the largest feature difference."""
    model = extractor.model
    with torch.no_grad(), full_precision():
        plain_s, reference = best_of(repeats, lambda: model(x_uint8)[0])
        out = {"plain": {"seconds": plain_s, "max_abs_diff": 0.0}}
        scale = float(reference.abs().max())

        def record(name: str, seconds: float, features: torch.Tensor, **extra) -> None:
            diff = float((features - reference).abs().max())
            out[name] = {"seconds": seconds, "speedup": plain_s / seconds, "max_abs_diff": diff,
                         "max_rel_diff": diff / scale, **extra}

        if "channels_last" in names:
            fast = model.to(memory_format=torch.channels_last)
            x = x_uint8.contiguous(memory_format=torch.channels_last)
            seconds, features = best_of(repeats, lambda: fast(x)[0])
            record("channels_last", seconds, features)
            model.to(memory_format=torch.contiguous_format)
        if "fast_path" in names:  # what the suite now runs: folded BatchNorms, channels_last, cheaper resize
            fast = InceptionExtractor(resolve_weights_path())
            seconds, features = best_of(repeats, lambda: fast(x_uint8)[0])
            record("fast_path", seconds, features)
            del fast
        if "threads_1" in names:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            seconds, features = best_of(repeats, lambda: model(x_uint8)[0])
            torch.set_num_threads(threads)
            record("threads_1", seconds, features, note=f"1 thread instead of {threads}")
        if "cached_resize" in names:  # the convolutions alone: what caching resized inputs would leave
            inputs = resized(model, x_uint8)
            body = torch.nn.Sequential(*[getattr(model, n) for n in (
                "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool")], torch.nn.Flatten(1))
            seconds, features = best_of(repeats, lambda: body(inputs))
            record("cached_resize", seconds, features, note="inputs resized to 299 beforehand")
        if "jit_freeze" in names:
            start = time.perf_counter()
            try:
                traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model.eval(), x_uint8)))
                traced(x_uint8)  # the first calls specialise
                setup = time.perf_counter() - start
                seconds, features = best_of(repeats, lambda: traced(x_uint8)[0])
                record("jit_freeze", seconds, features, setup_s=setup)
            except Exception as err:  # noqa: BLE001 - a candidate that fails is a finding
                out["jit_freeze"] = {"error": f"{type(err).__name__}: {err}"[:500]}
    if "overlap_decode" in names:
        out["overlap_decode"] = overlap_decode(extractor, folder, batch)
    if "compile" in names:
        out["compile"] = compiled_in_subprocess(x_uint8, repeats)
    if "allocator" in names:
        out["allocator"] = allocator_policy(x_uint8, repeats)
    return out


def allocator_job(x_path: str, weights: str, mode: str, repeats: int) -> dict:
    """In a fresh process: the suite's forward (fast path) of one batch, under glibc's default or
    under i2ibench.allocator's policy (process-wide, so it needs a process of its own)."""
    from i2ibench import allocator

    if mode == "policy":
        assert allocator.keep_freed_memory()
    x = torch.load(x_path)
    extractor = InceptionExtractor(weights)
    for _ in range(3):  # warm-up: under the policy the heap grows to a batch's needs within a few batches
        extractor(x)
    seconds, _ = best_of(repeats, lambda: extractor(x))
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    return {"seconds": seconds, "operators": operators(extractor, x, top=8), "peak_rss_mb": peak_rss_mb}


def allocator_policy(x_uint8: torch.Tensor, repeats: int) -> dict:
    """The fast path's forward of one batch without and with the allocator policy, and its operators."""
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(x_uint8, Path(tmp) / "x.pt")
        for mode in ("default", "policy"):
            done = subprocess.run([sys.executable, __file__, "--allocator-job", str(Path(tmp) / "x.pt"),
                                   str(resolve_weights_path()), mode, str(repeats)], capture_output=True, text=True)
            if done.returncode != 0:
                return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:500]}
            result[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    return {"seconds": result["policy"]["seconds"], "default_s": result["default"]["seconds"],
            "speedup_over_default_allocator": result["default"]["seconds"] / result["policy"]["seconds"],
            "operators_default": result["default"]["operators"], "operators_policy": result["policy"]["operators"],
            "peak_rss_mb_default": result["default"]["peak_rss_mb"], "peak_rss_mb_policy": result["policy"]["peak_rss_mb"],
            "max_abs_diff": None, "note": "the fast path, in fresh processes; speedup: against the plain path"}


def overlap_decode(extractor, folder: Path, batch: int) -> dict:
    """Decode + features of one folder: decoding in the main process, then in one loader worker
    that decodes the next batch while the forward runs."""
    paths = sorted(folder.iterdir())
    size = load_rgb(paths[0]).size
    result = {}
    for workers in (0, 1):
        loader = DataLoader(FolderImages(paths, size), batch_size=batch, num_workers=workers)
        start = time.perf_counter()
        for item in loader:
            extractor(to_uint8(item["image"]))
        result[f"workers_{workers}_s"] = time.perf_counter() - start
    result["speedup"] = result["workers_0_s"] / result["workers_1_s"]
    return result


COMPILE_SCRIPT = """
import sys, time, torch
from i2ibench.metrics.inception import InceptionExtractor, full_precision
x = torch.load(sys.argv[1]); reference = torch.load(sys.argv[2]); repeats = int(sys.argv[3])
model = InceptionExtractor(sys.argv[4], fast=False).model
with torch.no_grad(), full_precision():
    compiled = torch.compile(model)
    start = time.perf_counter(); compiled(x); setup = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); features = compiled(x)[0]; times.append(time.perf_counter() - start)
print(setup, min(times), float((features - reference).abs().max()))
"""


def compiled_in_subprocess(x_uint8: torch.Tensor, repeats: int, timeout: int = 900) -> dict:
    """torch.compile (Inductor) of the extractor in a fresh process: its first call includes the build."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(x_uint8, Path(tmp) / "x.pt")
        model = InceptionExtractor(resolve_weights_path(), fast=False).model
        with torch.no_grad(), full_precision():
            torch.save(model(x_uint8)[0], Path(tmp) / "ref.pt")
        try:
            done = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT, str(Path(tmp) / "x.pt"),
                                   str(Path(tmp) / "ref.pt"), str(repeats), str(resolve_weights_path())],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"compiling took more than {timeout} s"}
        if done.returncode != 0:
            return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:500]}
        setup, seconds, diff = map(float, done.stdout.split()[-3:])
        return {"setup_s": setup, "seconds": seconds, "max_abs_diff": diff}


def profile(args, make_folders: Callable) -> None:
    weights = resolve_weights_path()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["I2IBENCH_HOME"] = str(Path(tmp) / "home")
        folders = make_folders(Path(tmp) / "images", args.n, args.size)
        timings, kept = stages(folders, weights, args.batch, args.repeats)
        extractor, x = kept["extractor"], kept["uint8"]["real"][:args.batch]
        ops = operators(extractor.model, x)
        names = [n for n in args.candidates.split(",") if n]
        found = candidates(extractor, x, names, args.repeats, folders["real"], args.batch)
        found = {name: ({**value, "speedup": found["plain"]["seconds"] / value["seconds"]}
                        if "seconds" in value and "speedup" not in value and name != "plain" else value)
                 for name, value in found.items()}
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "load_average_before": load, "load_average_after": os.getloadavg()},
              "setup": {"images_per_folder": args.n, "size": args.size, "batch": args.batch, "repeats": args.repeats,
                        "lpips": kept["lpips"], "timing": "best of the repeats (a shared machine only adds time)"},
              "stages_s": timings, "inception_operators": ops, "candidates_one_batch": found}
    out = args.out or REPO / "results" / "perf" / "metrics_profile.json"
    files.write_json(out, result)
    print(f"stages ({args.n} + {args.n} images at {args.size} px, best of {args.repeats}; load average "
          f"{load[0]:.1f} on {os.cpu_count()} cores):")
    for name, value in timings.items():
        print(f"  {name:28}{value:8.2f} s")
    print("Inception forward, self time by operator (one batch):")
    for op in ops[:8]:
        print(f"  {op['op']:40}{op['self_s']:8.2f} s {op['share']:6.1%}")
    print(f"candidates, Inception forward of one batch of {args.batch} ({args.size} -> 299 px):")
    for name, value in found.items():
        if "error" in value:
            print(f"  {name:16} error: {value['error'][:100]}")
        elif name == "allocator":
            print(f"  {name:16}{value['seconds']:8.2f} s {value['speedup']:6.2f}x  fast path under the allocator "
                  f"policy; {value['default_s']:.2f} s without it ({value['speedup_over_default_allocator']:.2f}x); "
                  f"peak RSS {value['peak_rss_mb_default']:.0f} -> {value['peak_rss_mb_policy']:.0f} MB")
        elif name == "overlap_decode":
            print(f"  {name:16} decode+features of one folder: {value['workers_0_s']:.2f} s -> "
                  f"{value['workers_1_s']:.2f} s with 1 loader worker ({value['speedup']:.2f}x)")
        else:
            print(f"  {name:16}{value['seconds']:8.2f} s {value.get('speedup', 1.0):6.2f}x  max |diff| "
                  f"{value['max_abs_diff']:.2e}" + (f"  (set-up {value['setup_s']:.0f} s)" if "setup_s" in value else ""))
    print(f"written {out}")


if __name__ == "__main__" and sys.argv[1:2] == ["--allocator-job"]:
    x_path, weights, mode, repeats = sys.argv[2:6]
    print(json.dumps(allocator_job(x_path, weights, mode, int(repeats))))
