"""The GPU check: every GPU figure the suite's performance targets need, in one run of at most 8 minutes.

Run: `python benchmarks/gpu_check.py` (or `make bench-gpu`) on a machine with one CUDA GPU. It
writes results/perf/gpu.json after every measurement (atomically) and prints a table at the end:
- CycleGAN at 256 px (paper widths), batch 1 and 8: images/s and peak CUDA memory of the
  reference-equivalent plain float32 loop, the suite's default, each speed option alone and
  combined (cudnn.benchmark, channels_last, fused Adam, bf16 autocast, torch.compile, CUDA graphs);
- model FLOP utilisation: FLOPs of one step counted by torch.utils.flop_counter, against the dense
  peak of the device (PEAKS, from the vendors' datasheets);
- StarGAN v2 at 256 px, batch 8: images/s and peak memory (eager: its R1 penalty differentiates
  twice, which torch.compile does not support);
- Inception feature extraction (i2ibench's extractor, float32 as the metrics run it) at batch 50 and 200;
- the first 100 steps of CycleGAN's paper protocol on sketch-photo (the built-in set when the raw
  CUFS folder is not at hand; the JSON says which), float32 against the fastest configuration
  measured, with a second float32 seed as the noise scale: curves in the JSON and a PNG.

CUDA graphs: capturing the whole GAN step is impractical (the image pool decides on the host, with
its own RNG, which stored image each step returns, and the discriminators' requires_grad flips
twice per step), so they are measured per network through `torch.compile(mode="reduce-overhead")`,
which records a CUDA graph of each compiled network's forward and backward.

GPU time is scarce, so the check must not fail halfway. Each measurement runs in a worker process
and any error is recorded in the JSON as a string instead of ending the run; a worker that dies
or runs past its measurement's time cap is killed and a fresh one continues with the rest; a
global budget (--budget-s, 420 s by default) skips what no longer fits, in priority order.

`TINY=1` (or --tiny) runs the same code path with tiny sizes (32 px, tiny widths, 2 steps) on a
CPU, writing results/perf/gpu-tiny.json; without a CUDA device and without TINY it runs that tiny
check, says so and exits 0. On a CPU, torch.compile uses the `aot_eager` backend (Dynamo and
AOTAutograd, not Inductor's C++ build, which takes minutes here), and the CUDA-only rows (CUDA
graphs, peak CUDA memory, FLOP utilisation against a GPU peak) say "CUDA only".
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_speed as ts  # noqa: E402  (the shared model builders, plain loop and Trainer timing)

REPO = Path(__file__).resolve().parents[1]
PERF = REPO / "results" / "perf"
DEFAULT_OUT, TINY_OUT = PERF / "gpu.json", PERF / "gpu-tiny.json"
CUDA_ONLY = "CUDA only"
NO_CUDA_MESSAGE = "no CUDA device: ran the tiny CPU check instead"
INCEPTION_FILE = "inception-2015-12-05-pool3-noclassifier.pth"

# -- device peaks -----------------------------------------------------------------------------
# Dense (no structured sparsity) peak TFLOP/s: fp32 on CUDA cores, TF32 and BF16 on tensor cores
# (BF16 with FP32 accumulation). Datasheets quote tensor-core figures "with sparsity"; those are
# halved here. The first pattern that matches torch.cuda.get_device_name() wins.
# Sources (vendor datasheets / whitepapers):
#   A100: NVIDIA A100 Tensor Core GPU datasheet (SXM4 and PCIe: 19.5 / 156 / 312)
#   H100: NVIDIA H100 Tensor Core GPU datasheet (SXM 67 / 989* / 1979*; PCIe 51 / 756* / 1513*;
#         NVL 60 / 835* / 1671*; * = with sparsity)
#   H200: NVIDIA H200 Tensor Core GPU datasheet (SXM 67 / 989* / 1979*; NVL 60 / 835* / 1671*)
#   GH200: NVIDIA GH200 Grace Hopper Superchip datasheet (its GPU: as H100 SXM)
#   L40S: NVIDIA L40S datasheet (91.6 / 366* / 733*);  L4: NVIDIA L4 datasheet (30.3 / 120* / 242*)
#   A10: NVIDIA A10 Tensor Core GPU datasheet (31.2 / 62.5 / 125)
#   T4: NVIDIA T4 datasheet (8.1 fp32, 65 fp16 mixed; no TF32, no BF16)
#   RTX 4090: NVIDIA Ada Lovelace GPU Architecture whitepaper, appendix table (82.6 fp32;
#         TF32 82.6; BF16 with FP32 accumulate 165.2; dense)
#   V100: NVIDIA Tesla V100 datasheet (SXM2 15.7 fp32, PCIe 14; 125 / 112 fp16 tensor; no TF32, no BF16)
PEAKS: list[tuple[str, str, float, float | None, float | None]] = [
    # (pattern, name, fp32, tf32, bf16)
    (r"GH200", "GH200 (H100 SXM GPU)", 67.0, 494.5, 989.5),
    (r"H200 NVL", "H200 NVL", 60.0, 417.5, 835.5),
    (r"H200", "H200 SXM", 67.0, 494.5, 989.5),
    (r"H100.*PCIe", "H100 PCIe", 51.0, 378.0, 756.5),
    (r"H100 NVL", "H100 NVL", 60.0, 417.5, 835.5),
    (r"H100", "H100 SXM", 67.0, 494.5, 989.5),
    (r"A100", "A100", 19.5, 156.0, 312.0),
    (r"L40S", "L40S", 91.6, 183.0, 366.5),
    (r"\bL4\b", "L4", 30.3, 60.0, 121.0),
    (r"\bA10\b", "A10", 31.2, 62.5, 125.0),
    (r"\bT4\b", "T4", 8.1, None, None),
    (r"RTX 4090", "GeForce RTX 4090", 82.6, 82.6, 165.2),
    (r"V100.*PCIE", "V100 PCIe", 14.0, None, None),
    (r"V100", "V100 SXM2", 15.7, None, None),
]


def device_peaks(device_name: str | None) -> dict:
    """The dense peak TFLOP/s of a device by its CUDA name; None where the table has no entry."""
    for pattern, name, fp32, tf32, bf16 in PEAKS:
        if device_name and re.search(pattern, device_name, re.IGNORECASE):
            return {"device": device_name, "matched": name, "fp32": fp32, "tf32": tf32, "bf16": bf16}
    return {"device": device_name, "matched": None, "fp32": None, "tf32": None, "bf16": None}


# -- what is measured ---------------------------------------------------------------------------
OFF = {"channels_last": False, "fused_adam": False, "compile": False}
EAGER_FAST = {"channels_last": True, "fused_adam": True, "compile": False}
GRAPHS = {"compile": True, "compile_mode": "reduce-overhead"}
# The suite's configurations: SpeedOptions arguments, Lightning precision, cudnn.benchmark
# (absent: the Trainer's default, which leaves PyTorch's own default, off).
CYCLEGAN_CONFIGS: dict[str, dict] = {
    "eager-fp32": {"speed": OFF, "precision": "32-true", "benchmark": False},
    "default": {"speed": {}, "precision": "32-true"},
    "cudnn-benchmark": {"speed": OFF, "precision": "32-true", "benchmark": True},
    "channels-last": {"speed": {**OFF, "channels_last": True}, "precision": "32-true", "benchmark": False},
    "fused-adam": {"speed": {**OFF, "fused_adam": True}, "precision": "32-true", "benchmark": False},
    "bf16": {"speed": OFF, "precision": "bf16-mixed", "benchmark": False},
    "all-eager": {"speed": EAGER_FAST, "precision": "bf16-mixed", "benchmark": True},
    "compile": {"speed": {**OFF, "compile": True}, "precision": "32-true", "benchmark": False},
    "cuda-graphs": {"speed": {**OFF, **GRAPHS}, "precision": "32-true", "benchmark": False},
    "all+compile": {"speed": {**EAGER_FAST, "compile": True}, "precision": "bf16-mixed", "benchmark": True},
    "all+cuda-graphs": {"speed": {**EAGER_FAST, **GRAPHS}, "precision": "bf16-mixed", "benchmark": True},
}
PLAIN = "plain-loop"  # the reference-equivalent loop: float32, foreach Adam, cudnn.benchmark on as the reference sets it
EAGER_ORDER = [PLAIN, "eager-fp32", "default", "cudnn-benchmark", "channels-last", "fused-adam", "bf16", "all-eager"]
COMPILED_ORDER = ["all+cuda-graphs", "all+compile", "compile", "cuda-graphs"]
STARGAN_CONFIGS = ["eager-fp32", "default", "bf16", "all-eager"]
TINY_WIDTHS = {"generator_args": {"ngf": 8, "n_blocks": 1}, "discriminator_args": {"ndf": 8}}

FULL = {
    "size": 256, "batches": (1, 8), "steps": {1: 30, 8: 12}, "warmup": 5, "compile_warmup": 8, "overrides": None,
    "compiled": COMPILED_ORDER,
    "stargan": {"size": 256, "batch": 8, "steps": 8, "warmup": 3, "overrides": None},
    "inception": {"batches": (50, 200), "size": 256, "timed_images": 600, "warmup_batches": 2},
    "quality": {"steps": 100, "load_size": 286, "crop_size": 256, "model_args": None, "num_workers": 4,
                "fastest_at_batch": 1},
    "caps": {"eager": 90, "flops": 60, "inception": 90, "stargan": 150, "compiled": 180, "quality": 150},
    "budget_s": 420, "quality_reserve_s": 120, "compile_start_margin_s": 90, "worker_start_s": 180,
}
TINY = {
    # One batch size and one compiled configuration (plus a CUDA-graph one): the code paths, in about a minute.
    "size": 32, "batches": (2,), "steps": {2: 2}, "warmup": 1, "compile_warmup": 1, "overrides": TINY_WIDTHS,
    "compiled": ["all+cuda-graphs", "all+compile"],
    "stargan": {"size": 32, "batch": 2, "steps": 2, "warmup": 1, "overrides": {"base_dim": 8, "max_conv_dim": 16}},
    "inception": {"batches": (1, 2), "size": 32, "timed_images": 2, "warmup_batches": 0},
    "quality": {"steps": 3, "load_size": 36, "crop_size": 32, "model_args": TINY_WIDTHS, "num_workers": 0,
                "fastest_at_batch": 2},
    "caps": {"eager": 120, "flops": 60, "inception": 120, "stargan": 120, "compiled": 180, "quality": 120},
    "budget_s": 600, "quality_reserve_s": 60, "compile_start_margin_s": 10, "worker_start_s": 180,
}


def plan(sizes: dict, deadline: float) -> list[dict]:
    """Every measurement, in priority order, each with a time cap and a latest start time."""
    caps, jobs = sizes["caps"], []
    quality_start = deadline - sizes["quality_reserve_s"]

    def add(job_id: str, kind: str, cap: float, start_by: float = quality_start, end_by: float = quality_start,
            **spec) -> None:
        # start_by: the worker skips the job after it; end_by: the parent stops it then (the time
        # left after it is the quality runs').
        jobs.append({"id": job_id, "kind": kind, "cap_s": cap, "start_by": start_by, "end_by": end_by, **spec})

    for batch in sizes["batches"]:
        for config in EAGER_ORDER:
            add(f"cyclegan/b{batch}/{config}", "cyclegan", caps["eager"], config=config, batch=batch)
    for batch in sizes["batches"]:
        add(f"flops/b{batch}", "flops", caps["flops"], batch=batch)
    for batch in sizes["inception"]["batches"]:
        add(f"inception/b{batch}", "inception", caps["inception"], batch=batch)
    for config in STARGAN_CONFIGS:
        add(f"stargan-v2/b{sizes['stargan']['batch']}/{config}", "stargan", caps["stargan"], config=config)
    # Compiling costs up to minutes each, so what the budget leaves goes first to the combined options,
    # batch 1 (the paper's, where launch overhead matters most) and batch 8 in turn.
    for config in sizes["compiled"]:
        for batch in sizes["batches"]:
            add(f"cyclegan/b{batch}/{config}", "cyclegan", caps["compiled"],
                start_by=quality_start - sizes["compile_start_margin_s"], config=config, batch=batch)
    for name, config, seed in (("fp32-seed0", "eager-fp32", 0), ("fastest-seed0", "fastest", 0),
                               ("fp32-seed1", "eager-fp32", 1)):
        add(f"quality/{name}", "quality", caps["quality"], start_by=deadline - 10, end_by=deadline,
            config=config, seed=seed)
    return jobs


# == the worker: runs jobs, appends one JSON line per event =====================================
class Worker:
    def __init__(self, context: dict, events: Path) -> None:
        self.context, self.events = context, events
        self.sizes = TINY if context["tiny"] else FULL
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cpu":
            cheap_cpu_compile()
            if context["tiny"]:
                torch.set_num_threads(1)  # a shared small CPU: two spinning threads made tiny steps 10x slower

    def emit(self, **event) -> None:
        with open(self.events, "a") as handle:
            handle.write(json.dumps(event) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def run(self, jobs: list[dict]) -> int:
        self.emit(event="ready", pid=os.getpid(), machine=machine_info(self.device))
        for job in jobs:
            if time.time() > job["start_by"]:
                self.emit(event="done", id=job["id"], result={"status": "skipped",
                                                              "reason": "time budget: no time left to start it"})
                continue
            self.emit(event="start", id=job["id"], t=time.time())
            started = time.perf_counter()
            try:
                inject_fault(job["id"])
                result = {"status": "ok", **self.measure(job)}
            except CudaOnly as err:
                result = {"status": "unavailable", "reason": f"{CUDA_ONLY}: {err}"}
            except Exception as err:  # noqa: BLE001 - every failure becomes a string in the JSON
                result = {"status": "error", "error": f"{type(err).__name__}: {err}"[:2000],
                          "traceback_tail": traceback.format_exc().strip().splitlines()[-6:]}
            result["wall_s"] = time.perf_counter() - started
            self.emit(event="done", id=job["id"], result=result)
            if result["status"] == "error" and not self.device_healthy():
                return 3  # a sticky CUDA error: the parent starts a fresh worker for the rest
        return 0

    def device_healthy(self) -> bool:
        if self.device.type != "cuda":
            return True
        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            return True
        except Exception:  # noqa: BLE001
            return False

    # -- one measurement ---------------------------------------------------------------------
    def measure(self, job: dict) -> dict:
        fresh_state(self.device)
        result = getattr(self, f"measure_{job['kind']}")(job)
        if self.device.type == "cuda":
            result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
            result["memory_kind"] = "torch.cuda.max_memory_allocated"
        else:
            result["peak_memory_mb"] = CUDA_ONLY
        return result

    def measure_cyclegan(self, job: dict) -> dict:
        sizes, config_name, batch = self.sizes, job["config"], job["batch"]
        steps = sizes["steps"][batch]
        if config_name == PLAIN:
            torch.backends.cudnn.benchmark = True  # as the reference (base_model.py) sets it
            times = ts.plain_loop_seconds("cyclegan", sizes["size"], batch, steps, sizes["warmup"], self.device,
                                          sizes["overrides"])
            options = {"precision": "32-true", "adam": "foreach (PyTorch's default)", "cudnn_benchmark": True}
        else:
            config = CYCLEGAN_CONFIGS[config_name]
            graphs = config["speed"].get("compile_mode") == "reduce-overhead"
            if graphs and self.device.type != "cuda":
                raise CudaOnly("CUDA graphs (torch.compile mode reduce-overhead)")
            compiled = config["speed"].get("compile", False)
            warmup = sizes["compile_warmup"] if compiled else sizes["warmup"]
            with tempfile.TemporaryDirectory() as logs:
                times = ts.suite_seconds("cyclegan", sizes["size"], batch, steps, warmup, config, self.device,
                                         sizes["overrides"], callbacks=(cudagraph_step_marker(),) if graphs else (),
                                         log_dir=Path(logs))
            options = {**config, "cudnn_benchmark": config.get("benchmark", False)}
            if compiled and self.device.type == "cpu":
                options["compile_backend"] = "aot_eager (CPU check: Dynamo + AOTAutograd without Inductor)"
        median = statistics.median(times)
        return {"method": "cyclegan", "config": config_name, "size": sizes["size"], "batch": batch,
                "steps_timed": len(times), "median_step_s": median, "images_per_s": batch / median,
                "step_s": times, "options": options}

    def measure_stargan(self, job: dict) -> dict:
        spec, config = self.sizes["stargan"], CYCLEGAN_CONFIGS[job["config"]]
        with tempfile.TemporaryDirectory() as logs:
            times = ts.suite_seconds("stargan-v2", spec["size"], spec["batch"], spec["steps"], spec["warmup"], config,
                                     self.device, spec["overrides"], log_dir=Path(logs))
        median = statistics.median(times)
        return {"method": "stargan-v2", "config": job["config"], "size": spec["size"], "batch": spec["batch"],
                "steps_timed": len(times), "median_step_s": median, "images_per_s": spec["batch"] / median,
                "step_s": times, "options": {**config, "cudnn_benchmark": config.get("benchmark", False)}}

    def measure_flops(self, job: dict) -> dict:
        """FLOPs of one plain-loop CycleGAN step (forward and backward of every network), float32."""
        from torch.utils.flop_counter import FlopCounterMode

        sizes, batch = self.sizes, job["batch"]
        model = ts.build_model("cyclegan", sizes["size"], sizes["overrides"]).to(self.device)
        opt_g, opt_d = ts.plain_optimizers(model)
        data = ts.synthetic_batches("cyclegan", sizes["size"], batch, 1, self.device)[0]
        ts.plain_step(model, opt_g, opt_d, data)  # allocate optimiser state outside the count
        with FlopCounterMode(display=False) as counter:
            ts.plain_step(model, opt_g, opt_d, data)
        by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
        total = int(counter.get_total_flops())
        return {"method": "cyclegan", "size": sizes["size"], "batch": batch, "flops_per_step": total,
                "gflops_per_image": total / batch / 1e9, "by_op": by_op,
                "counted": "torch.utils.flop_counter.FlopCounterMode: convolutions and matmuls, forward + backward"}

    def measure_inception(self, job: dict) -> dict:
        from torch.utils.flop_counter import FlopCounterMode

        from i2ibench.metrics.inception import InceptionExtractor

        spec, batch = self.sizes["inception"], job["batch"]
        weights = self.context["inception_weights"]
        path = Path(weights["path"]) if weights["path"] else random_inception_weights(self.events.parent)
        extractor = InceptionExtractor(path, self.device)
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (batch, 3, spec["size"], spec["size"]), dtype=torch.uint8,
                               generator=generator).to(self.device)
        for _ in range(spec["warmup_batches"]):
            extractor(images)
        repeats = max(1, math.ceil(spec["timed_images"] / batch))
        sync(self.device)
        start = time.perf_counter()
        for _ in range(repeats):
            extractor(images)  # returns CPU tensors: the transfer (and so a sync) is inside
        seconds = time.perf_counter() - start
        with FlopCounterMode(display=False) as counter:
            extractor(images[:1])
        flops_per_image = int(counter.get_total_flops())
        per_s = batch * repeats / seconds
        return {"batch": batch, "input_size": spec["size"], "batches_timed": repeats, "images_per_s": per_s,
                "gflops_per_image": flops_per_image / 1e9, "achieved_tflops": flops_per_image * per_s / 1e12,
                "precision": "float32, TF32 off (the metrics' setting)", "weights": weights["note"]}

    def measure_quality(self, job: dict) -> dict:
        spec = self.sizes["quality"]
        name = job["config"]
        chosen_because = None
        if name == "fastest":
            name, chosen_because = fastest_config(self.events, spec["fastest_at_batch"])
        config = CYCLEGAN_CONFIGS[name]
        graphs = config["speed"].get("compile_mode") == "reduce-overhead"
        if graphs and self.device.type != "cuda":
            raise CudaOnly("CUDA graphs (torch.compile mode reduce-overhead)")
        dataset, note = quality_dataset(self.context, spec["crop_size"])
        run = ts.protocol_losses(config, job["seed"], spec["steps"], dataset, spec["load_size"], spec["crop_size"],
                                 spec["model_args"], spec["num_workers"],
                                 callbacks=(cudagraph_step_marker(),) if graphs else ())
        if len(run["losses"]) < spec["steps"]:
            raise RuntimeError(f"only {len(run['losses'])} of {spec['steps']} steps ran")
        return {"config": name, "chosen_because": chosen_because, "seed": job["seed"], "dataset": note,
                "steps": len(run["losses"]), "seconds": run["seconds"], "losses": run["losses"]}


FAULTS_ENV = "I2IBENCH_GPU_CHECK_FAULTS"


def inject_fault(job_id: str) -> None:
    """Tests of the check's own defences: ${FAULTS_ENV} = JSON {id regex: "hang" | "exit" | "raise"}."""
    for pattern, fault in json.loads(os.environ.get(FAULTS_ENV) or "{}").items():
        if re.search(pattern, job_id):
            if fault == "hang":
                time.sleep(3600)
            if fault == "exit":
                os._exit(9)
            raise RuntimeError(f"injected fault in {job_id}")


class CudaOnly(Exception):
    """A measurement that exists only on a CUDA device."""


def fresh_state(device: torch.device) -> None:
    """Each measurement starts alike: no compiled code, no cached blocks, peak counters reset."""
    gc.collect()
    if "torch._dynamo" in sys.modules:  # importing it costs seconds; nothing to reset before the first compile
        torch._dynamo.reset()
    torch.backends.cudnn.benchmark = False  # PyTorch's default; configurations that want it set it
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def cheap_cpu_compile() -> None:
    """On a CPU (the tiny check), torch.compile traces with Dynamo and AOTAutograd but skips Inductor:
    its C++ build takes minutes on a small CPU, and the check is about the code path, not speed."""
    original = torch.nn.Module.compile

    def compile_without_inductor(self, *args, **kwargs):
        return original(self, backend="aot_eager")

    torch.nn.Module.compile = compile_without_inductor


def cudagraph_step_marker():
    """Tells CUDA-graph trees where a training step begins (Lightning does not)."""
    import pytorch_lightning as pl

    class MarkStep(pl.Callback):
        def on_train_batch_start(self, *args) -> None:
            torch.compiler.cudagraph_mark_step_begin()

    return MarkStep()


def machine_info(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "device": str(device), "device_name": None,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(device_name=torch.cuda.get_device_name(device), cudnn=torch.backends.cudnn.version(),
                    memory_gb=properties.total_memory / 2**30, capability=list(torch.cuda.get_device_capability()),
                    bf16_supported=torch.cuda.is_bf16_supported())
    return info


def random_inception_weights(folder: Path) -> Path:
    """A state dict of torch-fidelity's InceptionV3 with random weights (speed only; features meaningless).

    torch-fidelity's constructor always loads weights, from a file or a download; a subclass that
    skips the load gives the architecture with PyTorch's default initialisation.
    """
    path = folder / "inception-random.pth"
    if path.is_file():
        return path
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity

    class Unloaded(fidelity.FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):
            return None

    saved = fidelity.load_state_dict_from_url
    fidelity.load_state_dict_from_url = lambda *args, **kwargs: {}  # no download
    try:
        model = Unloaded("inception-v3-compat", ["2048"])
    finally:
        fidelity.load_state_dict_from_url = saved
    torch.save(model.state_dict(), path)
    return path


def fastest_config(events: Path, batch: int) -> tuple[str, str]:
    """The suite configuration with the most CycleGAN images/s at `batch` measured so far."""
    rows = [e["result"] for e in read_events(events) if e.get("event") == "done"
            and e["id"].startswith(f"cyclegan/b{batch}/") and e["result"].get("status") == "ok"
            and e["result"].get("config") in CYCLEGAN_CONFIGS]
    if not rows:
        return "all-eager", f"no CycleGAN batch-{batch} figure was measured; the combined eager options"
    best = max(rows, key=lambda r: r["images_per_s"])
    return best["config"], f"fastest of {len(rows)} configurations at batch {batch} ({best['images_per_s']:.2f} img/s)"


def quality_dataset(context: dict, crop_size: int) -> tuple[str, str]:
    """sketch-photo when its raw CUFS folder (or a prepared copy) is at hand, else the built-in set."""
    from i2ibench.data import catalog
    from i2ibench.data.embedded import materialize

    if context["tiny"]:  # 3 steps at 32 px: the code path, not the data
        return str(materialize("builtin", size=crop_size)), f"built-in photo/sketch set at {crop_size} px (TINY)"
    cufs = context.get("cufs_dir")
    if cufs:
        os.environ["I2IBENCH_CUFS_DIR"] = cufs  # catalog.resolve prepares sketch-photo from it on first use
        return "sketch-photo", f"sketch-photo (CUFS student, raw folder {cufs})"
    if catalog.entries()["sketch-photo"].folder.is_dir():
        return "sketch-photo", f"sketch-photo (prepared at {catalog.entries()['sketch-photo'].folder})"
    return str(materialize("builtin", size=crop_size)), (
        f"built-in photo/sketch set (scikit-image photographs) at {crop_size} px: the raw CUFS folder for "
        "sketch-photo was not found ($I2IBENCH_CUFS_DIR, shared/ or ../shared/datasets/cufs-student)")


# == the parent: plans, runs workers, enforces caps, writes the JSON ============================
def read_events(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut short by a kill
    return events


def find_inception_weights() -> dict:
    """The weights the metrics would use offline, else random ones (the speed is the same)."""
    candidates = [os.environ.get("I2IBENCH_INCEPTION_WEIGHTS"), REPO / "shared" / "weights" / INCEPTION_FILE,
                  REPO.parent / "shared" / "weights" / INCEPTION_FILE,
                  Path(torch.hub.get_dir()) / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return {"path": str(candidate), "note": f"weights file {Path(candidate).name}"}
    return {"path": None, "note": "random weights: no weights file configured or found (speed is unaffected; "
                                  "the features are meaningless)"}


def find_cufs() -> str | None:
    for candidate in (os.environ.get("I2IBENCH_CUFS_DIR"), REPO / "shared" / "datasets" / "cufs-student",
                      REPO.parent / "shared" / "datasets" / "cufs-student"):
        if candidate and Path(candidate).is_dir():
            return str(Path(candidate).resolve())
    return None


class Runner:
    def __init__(self, args, tiny: bool, tiny_reason: str | None) -> None:
        self.args, self.tiny = args, tiny
        self.sizes = TINY if tiny else FULL
        self.started = time.time()
        self.deadline = self.started + (args.budget_s or self.sizes["budget_s"])
        self.jobs = plan(self.sizes, self.deadline)
        for job in self.jobs:
            job["cap_s"] = args.cap_s or job["cap_s"]
        if args.only:
            self.jobs = [job for job in self.jobs if re.search(args.only, job["id"])]
        self.results: dict[str, dict] = {}
        self.machine: dict = {}
        self.context = {"tiny": tiny, "inception_weights": find_inception_weights(), "cufs_dir": find_cufs()}
        self.document = {"schema": 1, "tiny": tiny, "tiny_reason": tiny_reason, "complete": False,
                         "budget_s": round(self.deadline - self.started), "notes": NOTES}
        self.tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.events = self.tmp / "events.jsonl"
        self.log = args.out.with_suffix(".log")

    # -- running -----------------------------------------------------------------------------
    def run(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        self.write()
        while pending := [job for job in self.jobs if job["id"] not in self.results]:
            if time.time() > self.deadline:
                for job in pending:
                    self.record(job["id"], {"status": "skipped", "reason": "time budget exhausted"})
                break
            self.run_worker(pending)
            if all(job["id"] not in self.results for job in pending):  # a worker that ran nothing: do not loop
                for job in pending:
                    self.record(job["id"], {"status": "error", "error": f"the worker ran nothing; log: {self.log_tail()}"})
        self.document["complete"] = True
        self.write()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_worker(self, pending: list[dict]) -> None:
        jobs_file = self.tmp / "jobs.json"
        jobs_file.write_text(json.dumps({"context": self.context, "jobs": pending}))
        seen = len(read_events(self.events))
        with open(self.log, "a") as log:
            worker = subprocess.Popen([sys.executable, __file__, "--worker", str(jobs_file), str(self.events)],
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                      env={**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"})
        spawned, current, since, ready = time.time(), None, None, False
        while True:
            events = read_events(self.events)
            for event in events[seen:]:
                if event["event"] == "ready":
                    ready, self.machine = True, event["machine"]
                    self.document["machine"] = self.machine
                elif event["event"] == "start":
                    current, since = event["id"], time.time()
                    print(f"  {current} ...", flush=True)
                elif event["event"] == "done":
                    self.record(event["id"], event["result"])
                    current = None
            seen = len(events)
            code = worker.poll()
            if code is not None:
                if current is not None:
                    self.record(current, {"status": "error", "error": f"the worker process died (exit {code}); "
                                                                      f"log: {self.log_tail()}"})
                elif code != 0 and not ready:
                    for job in pending:
                        self.record(job["id"], {"status": "error", "error": f"the worker did not start (exit {code}); "
                                                                            f"log: {self.log_tail()}"})
                return
            now = time.time()
            job = next((j for j in pending if j["id"] == current), None)
            if job is not None and (now - since > job["cap_s"] or now > job["end_by"]):
                self.kill(worker)
                why = (f"its {job['cap_s']} s cap" if now - since > job["cap_s"]
                       else "the time budget (what is left belongs to the later measurements)")
                self.record(current, {"status": "error", "error": f"timed out after {now - since:.0f} s: {why}"})
                return
            if now > self.deadline:
                self.kill(worker)
                if current is not None:
                    self.record(current, {"status": "error", "error": "timed out: the global time budget ran out"})
                return
            if not ready and now - spawned > self.sizes["worker_start_s"]:
                self.kill(worker)
                for job in pending:
                    self.record(job["id"], {"status": "error", "error": "the worker did not start in time"})
                return
            time.sleep(0.2)

    @staticmethod
    def kill(worker: subprocess.Popen) -> None:
        try:
            os.killpg(worker.pid, signal.SIGKILL)  # the worker and its data-loader processes
        except ProcessLookupError:
            pass
        worker.wait()

    def log_tail(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines() if self.log.is_file() else []
        return " | ".join(lines[-3:])[-600:]

    def record(self, job_id: str, result: dict) -> None:
        self.results[job_id] = result
        shown = {"ok": "ok", "unavailable": result.get("reason"), "skipped": f"skipped: {result.get('reason')}",
                 "error": f"error: {result.get('error')}"}.get(result.get("status"), result.get("status"))
        if result.get("status") == "ok" and "images_per_s" in result:
            shown = f"{result['images_per_s']:.2f} img/s"
        print(f"  {job_id}: {str(shown)[:160]}", flush=True)
        self.write()

    # -- the JSON ----------------------------------------------------------------------------
    def write(self) -> None:
        from i2ibench import files

        self.document.update(self.sections())
        self.document["elapsed_s"] = round(time.time() - self.started, 1)
        files.write_json(self.args.out, self.document)

    def sections(self) -> dict:
        """Each section as a list of rows: figures where measured, else a status with the reason."""
        rows = {job["id"]: {"id": job["id"], **self.results.get(job["id"], {"status": "pending"})} for job in self.jobs}
        by_kind: dict[str, list[dict]] = {}
        for job in self.jobs:
            by_kind.setdefault(job["kind"], []).append(rows[job["id"]])
        peaks = device_peaks(self.machine.get("device_name"))
        flops = {r["batch"]: r["flops_per_step"] for r in by_kind.get("flops", []) if r["status"] == "ok"}
        for row in by_kind.get("cyclegan", []):
            if row["status"] == "ok":
                row.update(utilisation(row, flops.get(row["batch"]), peaks, self.machine))
        return {"peaks_tflops": {**peaks, "kind": "dense (no sparsity), per datasheet"},
                "cyclegan": {"size": self.sizes["size"], "rows": by_kind.get("cyclegan", []),
                             "ratios": cyclegan_ratios(by_kind.get("cyclegan", []))},
                "flops": {"rows": by_kind.get("flops", [])},
                "stargan_v2": {"rows": by_kind.get("stargan", [])},
                "inception": {"weights": self.context["inception_weights"]["note"],
                              "rows": by_kind.get("inception", [])},
                "quality": quality_summary(by_kind.get("quality", []))}

    def finish(self) -> None:
        self.plot()
        print_table(self.document)
        print(f"written {self.args.out}" + (f" and {self.png()}" if self.png().is_file() else "")
              + f" ({self.document['elapsed_s']:.0f} s; worker log {self.log})")

    def png(self) -> Path:
        return self.args.out.with_name(self.args.out.stem + "-quality.png")

    def plot(self) -> None:
        runs = {r["id"].split("/")[-1] + f" ({r['config']})": r for r in self.document["quality"]["runs"]
                if r.get("status") == "ok"}
        if len(runs) < 2:
            return
        try:
            keys = [k for k in ("train/gen_total", "train/gen_cycle_A", "train/disc_A", "train/disc_B")
                    if all(k in r["losses"][0] for r in runs.values())]
            ts.plot_curves(runs, keys, self.png())
        except Exception as err:  # noqa: BLE001 - the figures in the JSON matter more than the picture
            self.document["quality"]["plot_error"] = f"{type(err).__name__}: {err}"
            self.write()


NOTES = [
    "images/s: median step time (batch to batch through the Lightning Trainer for the suite's rows; "
    "the plain loop times its own steps), synthetic in-memory batches, after warm-up steps (compile included there).",
    "plain-loop: the reference-equivalent step (same networks and losses, no Lightning), float32, "
    "foreach Adam, cudnn.benchmark on as the reference's base_model.py sets it.",
    "float32 rows: PyTorch's defaults, i.e. cuDNN convolutions may use TF32 (machine.cudnn_allow_tf32); "
    "their utilisation is against the TF32 peak then, bf16 rows against the BF16 peak.",
    "cuda-graphs rows: torch.compile(mode='reduce-overhead') per network (CUDA-graph trees), with "
    "torch.compiler.cudagraph_mark_step_begin() at each step; the whole GAN step is not captured "
    "(host-side image pool, requires_grad flips).",
    "StarGAN v2: eager only; its R1 penalty needs double backward, which torch.compile does not support.",
    "Inception: i2ibench's extractor (torch-fidelity's InceptionV3), float32 with TF32 off as the metrics "
    "run it, uint8 input at inception.input_size px resized to 299 inside, features copied back to the host.",
]


def utilisation(row: dict, flops_per_step: int | None, peaks: dict, machine: dict) -> dict:
    if flops_per_step is None:
        return {"achieved_tflops": None, "mfu": None, "mfu_note": "no FLOP count for this batch"}
    achieved = flops_per_step / row["median_step_s"] / 1e12
    bf16 = row["options"].get("precision") == "bf16-mixed"
    kind = "bf16" if bf16 else ("tf32" if machine.get("cudnn_allow_tf32") else "fp32")
    peak = peaks.get(kind)
    if machine.get("device") != "cuda" or peak is None:
        why = "CUDA only" if machine.get("device") != "cuda" else f"no {kind} peak for this device in PEAKS"
        return {"achieved_tflops": achieved, "mfu": None, "mfu_note": why}
    return {"achieved_tflops": achieved, "mfu": achieved / peak, "mfu_peak": f"{kind} {peak} TFLOP/s"}


def cyclegan_ratios(rows: list[dict]) -> dict:
    """Per batch: each configuration's images/s over the plain loop's (the targets' yardstick)."""
    ratios: dict[str, dict] = {}
    ok = [r for r in rows if r.get("status") == "ok"]
    for batch in sorted({r["batch"] for r in ok}):
        base = next((r for r in ok if r["batch"] == batch and r["config"] == PLAIN), None)
        if base is None:
            continue
        same = [r for r in ok if r["batch"] == batch]
        fastest = max(same, key=lambda r: r["images_per_s"])
        ratios[f"b{batch}"] = {"vs": PLAIN, **{r["config"]: r["images_per_s"] / base["images_per_s"] for r in same},
                               "fastest": fastest["config"]}
    return ratios


def quality_summary(rows: list[dict]) -> dict:
    """Mean of each loss over the last quarter of the steps, and the fast - fp32 and seed differences."""
    summary: dict = {"runs": rows}
    ok = {r["id"].split("/")[-1]: r for r in rows if r.get("status") == "ok"}
    if not ok:
        return summary
    summary["dataset"] = next(iter(ok.values()))["dataset"]
    keys = ("train/gen_total", "train/gen_cycle_A", "train/disc_A", "train/disc_B")
    tails = {}
    for name, run in ok.items():
        tail = run["losses"][-max(1, len(run["losses"]) // 4):]
        tails[name] = {k: statistics.fmean(step[k] for step in tail) for k in keys if all(k in s for s in tail)}
    summary["last_quarter_mean"] = tails
    if "fp32-seed0" in tails and "fastest-seed0" in tails:
        summary["fast_minus_fp32"] = {k: tails["fastest-seed0"][k] - v for k, v in tails["fp32-seed0"].items()
                                      if k in tails["fastest-seed0"]}
    if "fp32-seed0" in tails and "fp32-seed1" in tails:
        summary["seed1_minus_seed0"] = {k: tails["fp32-seed1"][k] - v for k, v in tails["fp32-seed0"].items()
                                        if k in tails["fp32-seed1"]}
    return summary


def print_table(doc: dict) -> None:
    machine = doc.get("machine", {})
    print(f"\n{machine.get('device_name') or 'CPU'} | torch {machine.get('torch')} | "
          f"{'TINY sizes' if doc['tiny'] else 'full sizes'} | peaks {doc['peaks_tflops'].get('matched')}")

    def shown(row: dict, key: str, fmt: str) -> str:
        if row.get("status") != "ok":
            return {"unavailable": "n/a", "skipped": "skipped", "pending": "-"}.get(row.get("status"), "error")
        value = row.get(key)
        return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"

    cyclegan = doc["cyclegan"]["rows"]
    batches = sorted({r.get("batch") for r in cyclegan if r.get("batch") is not None} or
                     {int(r["id"].split("/")[1][1:]) for r in cyclegan})
    configs = list(dict.fromkeys(r["id"].split("/")[-1] for r in cyclegan))
    header = f"{'CycleGAN ' + str(doc['cyclegan']['size']) + ' px':22}" + "".join(
        f"{'b' + str(b) + ' img/s':>12}{'MB':>9}{'MFU':>7}" for b in batches)
    print(header)
    for config in configs:
        line = f"{config:22}"
        for b in batches:
            row = next((r for r in cyclegan if r["id"] == f"cyclegan/b{b}/{config}"), {})
            line += f"{shown(row, 'images_per_s', '.2f'):>12}{shown(row, 'peak_memory_mb', '.0f'):>9}"
            mfu = row.get("mfu")
            line += f"{format(mfu, '.1%') if isinstance(mfu, float) else '-':>7}"
        print(line)
    for key, ratio in doc["cyclegan"]["ratios"].items():
        print(f"  {key}: fastest {ratio['fastest']} {ratio[ratio['fastest']]:.2f}x the plain loop; "
              f"default {ratio.get('default', float('nan')):.2f}x")
    for row in doc["stargan_v2"]["rows"]:
        print(f"{'StarGAN v2 ' + row['id'].split('/', 1)[1]:34}{shown(row, 'images_per_s', '.2f'):>10} img/s"
              f"{shown(row, 'peak_memory_mb', '.0f'):>9} MB")
    for row in doc["inception"]["rows"]:
        print(f"{'Inception ' + row['id'].split('/', 1)[1]:34}{shown(row, 'images_per_s', '.1f'):>10} img/s"
              f"{shown(row, 'peak_memory_mb', '.0f'):>9} MB")
    print(f"  Inception weights: {doc['inception']['weights']}")
    quality = doc["quality"]
    for row in quality["runs"]:
        status = f"{row.get('config')}, {row.get('seconds', 0):.0f} s" if row.get("status") == "ok" else shown(row, "", "")
        print(f"quality {row['id'].split('/')[-1]:18}{status}")
    if "fast_minus_fp32" in quality:
        print(f"  on {quality['dataset']}; last-quarter mean, fast - fp32 (seed 1 - seed 0):")
        for key, value in quality["fast_minus_fp32"].items():
            noise = quality.get("seed1_minus_seed0", {}).get(key, float("nan"))
            print(f"    {key:22}{value:+.4f} ({noise:+.4f})")
    problems = [r["id"] for section in ("cyclegan", "stargan_v2", "inception", "flops")
                for r in doc[section]["rows"] if r.get("status") == "error"]
    problems += [r["id"] for r in quality["runs"] if r.get("status") == "error"]
    if problems:
        print(f"errors (strings in the JSON): {', '.join(problems)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on any device (also: TINY=1)")
    parser.add_argument("--out", type=Path, help=f"JSON path (default {DEFAULT_OUT.relative_to(REPO)}, "
                                                 f"tiny: {TINY_OUT.relative_to(REPO)})")
    parser.add_argument("--budget-s", type=float, help="global time budget in seconds (default 420; tiny 600)")
    parser.add_argument("--cap-s", type=float, help="stop any one measurement after this many seconds "
                                                    "(default: 60 to 180 s by kind)")
    parser.add_argument("--only", help="run only the measurements whose id matches this regular expression")
    parser.add_argument("--list", action="store_true", help="print the measurements in order and exit")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(Path(args.worker[0]).read_text())
        return Worker(spec["context"], Path(args.worker[1])).run(spec["jobs"])

    tiny = args.tiny or os.environ.get("TINY", "") not in ("", "0")
    reason = "TINY=1" if tiny else None
    if not tiny and not args.list and not torch.cuda.is_available():
        tiny, reason = True, NO_CUDA_MESSAGE
        print(NO_CUDA_MESSAGE + " (results in the tiny JSON, not gpu.json)", flush=True)
    if args.out is None:  # a partial run (--only) never replaces the full check's file
        args.out = TINY_OUT if tiny else (DEFAULT_OUT.with_name("gpu-partial.json") if args.only else DEFAULT_OUT)
    runner = Runner(args, tiny, reason)
    if args.list:
        for job in runner.jobs:
            print(f"{job['id']:34} cap {job['cap_s']:4} s, starts by +{job['start_by'] - runner.started:.0f} s")
        return 0
    print(f"GPU check ({'tiny' if tiny else 'full'}): {len(runner.jobs)} measurements, budget "
          f"{runner.document['budget_s']} s, writing {args.out}", flush=True)
    runner.run()
    runner.finish()
    if reason == NO_CUDA_MESSAGE:
        print(NO_CUDA_MESSAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
