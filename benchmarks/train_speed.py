"""Training throughput and peak memory of each method, against a plain PyTorch loop, per speed option.

Run: `python benchmarks/train_speed.py` (or `make bench-speed`). For each method and size it
times, each in a fresh process (clean peak memory), on the same in-memory batches:
- `plain-loop`: the method's own networks and losses driven by a plain PyTorch loop with no
  Lightning (the CycleGAN family and the mask CycleGAN: the reference-equivalent step);
- `eager-fp32`: the suite's step through the Lightning Trainer with every speed option off;
- `fused-adam`, `channels-last`, `compile`, `bf16`: one option at a time;
- `default`: the suite's defaults (SpeedOptions()); `bf16+compile`, `bf16+channels-last`: combined.
Prints images/second and peak memory, and the ratios the performance targets are stated in;
writes results/perf/train_speed.json. `--sizes paper` uses each method's paper size and batch
(for a GPU); `--sizes cpu` (the default without a GPU) small ones.
Also: `--quality` (loss curves of the fastest path against float32, seeds as the noise scale)
and `--scaling` (step time at 64 / 128 / 256 px).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CPU_SIZES = {"cyclegan": (128, 1), "ssim-lsgan": (128, 1), "densenet-cyclegan": (128, 1),
             "inception-cyclegan": (128, 1), "mask-cyclegan": (128, 1), "instagan": (128, 1), "stargan-v2": (128, 2),
             "gan-alone": (128, 1), "cut": (128, 1), "fastcut": (128, 1), "dualgan": (128, 1), "pix2pix": (128, 1),
             "bicyclegan": (128, 2), "sragan": (128, 1), "lsragan": (128, 2), "stargan": (128, 2),
             "drit": (128, 2), "msgan": (128, 2), "munit": (128, 1)}
PAPER_SIZES = {"cyclegan": (256, 1), "ssim-lsgan": (128, 1), "densenet-cyclegan": (256, 1),
               "inception-cyclegan": (256, 1), "mask-cyclegan": (256, 1), "instagan": (256, 1), "stargan-v2": (256, 8),
               "gan-alone": (256, 1), "cut": (256, 1), "fastcut": (256, 1), "dualgan": (256, 1), "pix2pix": (256, 1),
               "bicyclegan": (256, 2), "sragan": (256, 1), "lsragan": (256, 2), "stargan": (128, 16),
               "drit": (216, 2), "msgan": (216, 2), "munit": (256, 1)}
# Networks sized for the image: the reference's 128 px variants where its 256 px one cannot take 128 px
# (unet_128: 7 levels; BicycleGAN's resnet_128 encoder and basic_128_multi discriminators), and
# DualGAN's critic head, which is built for one image size.
SIZE_OVERRIDES = {
    ("pix2pix", 128): {"generator_args": {"num_downs": 7}},
    ("bicyclegan", 128): {"generator_args": {"num_downs": 7}, "encoder_args": {"n_blocks": 4},
                          "discriminator_args": {"n_layers": 2}},
    ("dualgan", 128): {"generator_args": {"num_downs": 7}, "discriminator_args": {"image_size": 128}},
    ("drit", 128): {"content_discriminator_args": {"n_layers": 2}},  # the reference's 3 layers need ~200 px
    ("msgan", 128): {"content_discriminator_args": {"n_layers": 2}},
}
# Methods whose steps alternate between kinds (StarGAN: G steps once per n_critic = 5 critic steps;
# DRIT++: 2 of 3 steps train its content discriminator alone): timed over whole cycles and reported
# by the mean step, since a median would time the cheap kind alone.
CYCLE_STEPS = {"stargan": 5, "drit": 3, "msgan": 3}
PLAIN_LOOP = {"cyclegan", "ssim-lsgan", "densenet-cyclegan", "inception-cyclegan", "mask-cyclegan"}
OFF = {"channels_last": False, "fused_adam": False, "compile": False}
CONFIGS = {  # one speed option at a time against eager float32, then the defaults and combinations
    "plain-loop": {},
    "eager-fp32": {"speed": OFF, "precision": "32-true"},
    "fused-adam": {"speed": {**OFF, "fused_adam": True}, "precision": "32-true"},
    "channels-last": {"speed": {**OFF, "channels_last": True}, "precision": "32-true"},
    "compile": {"speed": {**OFF, "compile": True}, "precision": "32-true"},
    "bf16": {"speed": OFF, "precision": "bf16-mixed"},
    "default": {"speed": {}, "precision": "32-true"},
    "bf16+compile": {"speed": {**OFF, "compile": True}, "precision": "bf16-mixed"},
    "bf16+channels-last": {"speed": {**OFF, "channels_last": True}, "precision": "bf16-mixed"},
}


# -- one measurement (runs in its own process) --------------------------------------------------
def build_model(method: str, size: int, overrides: dict | None = None):
    """The method from its own config (paper widths), at `size` px; offline perceptual network.

    `overrides` replace init arguments (nested dicts such as generator_args are merged), e.g. the
    tiny widths of a CPU smoke run.
    """
    from i2ibench.registry import METHODS, load_all

    load_all()
    spec = METHODS.get(method)
    args = yaml.safe_load(spec.config_path.read_text())["model"]["init_args"]
    if args.get("perceptual_network") == "vgg16":
        args["perceptual_network"] = "inception"  # VGG-16 needs a download; the same cost class offline
    if method == "stargan-v2":
        args.update(img_size=size, num_domains=2)
    if method == "stargan":
        args.update(image_size=size, num_domains=2)
    for key, value in {**SIZE_OVERRIDES.get((method, size), {}), **(overrides or {})}.items():
        args[key] = {**(args.get(key) or {}), **value} if isinstance(value, dict) else value
    return spec.module_class(**args)


def synthetic_batches(method: str, size: int, batch: int, count: int, device: torch.device) -> list[dict]:
    """Random images (and masks / latents) in the method's batch contract, already on the device."""
    generator = torch.Generator().manual_seed(0)
    image = lambda: (torch.rand(batch, 3, size, size, generator=generator) * 2 - 1).to(device)  # noqa: E731
    batches = []
    for _ in range(count):
        if method in ("stargan-v2", "stargan"):  # StarGAN reads x and y only
            y = torch.randint(0, 2, (batch,), generator=generator).to(device)
            batches.append({"x": image(), "y": y, "x_ref": image(), "x_ref2": image(), "y_ref": 1 - y,
                            "z": torch.randn(batch, 16, generator=generator).to(device),
                            "z2": torch.randn(batch, 16, generator=generator).to(device)})
            continue
        item = {"A": image(), "B": image()}
        if method in ("instagan", "mask-cyclegan"):
            for d in "AB":
                masks = torch.zeros(batch, 4, size, size)
                masks[:, 0, size // 4: size // 2, size // 4: size // 2] = 1
                masks[:, 1, size // 2: 3 * size // 4, size // 3: 2 * size // 3] = 1
                item[f"{d}_masks"], item[f"{d}_count"] = masks.to(device), torch.full((batch,), 2)
        batches.append(item)
    return batches


def plain_optimizers(model) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """The reference's two Adams (generators, discriminators), its default (foreach) implementation."""
    return tuple(torch.optim.Adam(list(p), lr=2e-4, betas=(0.5, 0.999)) for p in (
        list(model.gen_AB.parameters()) + list(model.gen_BA.parameters()),
        list(model.disc_A.parameters()) + list(model.disc_B.parameters())))


def plain_step(model, opt_g, opt_d, batch: dict) -> None:
    """One CycleGAN step as a plain PyTorch loop: the module's networks and losses, no Lightning."""
    from i2ibench.losses import discriminator_adversarial_loss

    images = model.forward_cycle(batch)
    model.disc_A.requires_grad_(False), model.disc_B.requires_grad_(False)
    g_total = torch.stack(list(model.generator_losses(images).values())).sum()
    opt_g.zero_grad(set_to_none=True)
    g_total.backward()
    opt_g.step()
    model.disc_A.requires_grad_(True), model.disc_B.requires_grad_(True)
    d_loss = (discriminator_adversarial_loss(model.disc_B(images["real_B"]),
                                             model.disc_B(model.pool_B.query(images["fake_B"])), "lsgan")
              + discriminator_adversarial_loss(model.disc_A(images["real_A"]),
                                               model.disc_A(model.pool_A.query(images["fake_A"])), "lsgan"))
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()


def plain_loop_seconds(method: str, size: int, batch: int, steps: int, warmup: int, device,
                       overrides: dict | None = None) -> list[float]:
    """Seconds per step of the plain loop (the reference-equivalent CycleGAN step), after `warmup` steps."""
    model = build_model(method, size, overrides).to(device)
    opt_g, opt_d = plain_optimizers(model)
    batches = synthetic_batches(method, size, batch, 4, device)
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        plain_step(model, opt_g, opt_d, batches[step % 4])
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[warmup:]


def suite_seconds(method: str, size: int, batch: int, steps: int, warmup: int, config: dict, device,
                  overrides: dict | None = None, callbacks: tuple = (), log_dir: Path | None = None) -> list[float]:
    """The suite's step through the Lightning Trainer (CSV logging on, as in a run), timed per batch.

    `config`: {"speed": SpeedOptions arguments, "precision": Lightning precision, and optionally
    "benchmark": cudnn.benchmark (Lightning's `benchmark`; absent: the Trainer's default)}.
    """
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger

    from i2ibench.methods.speed import SpeedOptions

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.times, self.last = [], None

        def on_train_batch_start(self, *args) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            if self.last is not None:
                self.times.append(now - self.last)  # batch to batch: the whole loop's overhead counts
            self.last = now

    batches = synthetic_batches(method, size, batch, 4, torch.device("cpu"))
    loader = torch.utils.data.DataLoader([batches[i % 4] for i in range(warmup + steps + 1)], batch_size=None)
    timer = Timer()
    model = build_model(method, size, overrides)
    model.on_train_epoch_end = lambda: None  # no per-epoch sample grid (there is one epoch here)
    trainer = pl.Trainer(accelerator=device.type, devices=1, max_epochs=1, precision=config["precision"],
                         logger=CSVLogger(str(log_dir or REPO / "runs" / "speed")), log_every_n_steps=50,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[SpeedOptions(**config["speed"]), timer, *callbacks], num_sanity_val_steps=0,
                         limit_val_batches=0, benchmark=config.get("benchmark"))
    trainer.fit(model, train_dataloaders=loader)
    return timer.times[warmup:]


def measure(job: dict) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    if job["config"] == "plain-loop":
        times = plain_loop_seconds(job["method"], job["size"], job["batch"], job["steps"], job["warmup"], device)
    else:
        times = suite_seconds(job["method"], job["size"], job["batch"], job["steps"], job["warmup"],
                              CONFIGS[job["config"]], device)
    median = statistics.mean(times) if job["method"] in CYCLE_STEPS else statistics.median(times)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {**job, "median_step_s": median, "images_per_s": job["batch"] / median, "peak_memory_mb": peak,
            "step_statistic": "mean over whole cycles" if job["method"] in CYCLE_STEPS else "median",
            "memory_kind": "CUDA max allocated" if device.type == "cuda" else "process peak RSS"}


def run_job(job: dict, timeout: int) -> dict:
    """One measurement in a fresh process."""
    result = subprocess.run([sys.executable, __file__, "--job", json.dumps(job)], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "WANDB_MODE": "disabled"})
    if result.returncode != 0:
        return {**job, "error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- quality: do the fast paths train the same? --------------------------------------------------
def loss_recorder(stop_after: int | None = None):
    """A callback keeping every step's `train/*` losses; it stops the fit after `stop_after` batches."""
    import pytorch_lightning as pl

    class Losses(pl.Callback):
        def __init__(self) -> None:
            self.steps: list[dict] = []

        def on_train_batch_end(self, trainer, *args) -> None:
            self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})
            if stop_after is not None and len(self.steps) >= stop_after:
                trainer.should_stop = True

    return Losses()


def quality_run(job: dict) -> dict:
    """CycleGAN (smoke widths) on the built-in photo/sketch set: every per-step loss of one run."""
    import pytorch_lightning as pl

    from i2ibench.data import I2IDataModule
    from i2ibench.methods.cyclegan import CycleGAN
    from i2ibench.methods.speed import SpeedOptions

    pl.seed_everything(job["seed"])
    recorder = loss_recorder()
    config = CONFIGS[job["config"]]
    model = CycleGAN(generator_args={"ngf": 32, "n_blocks": 6}, discriminator_args={"ndf": 32},
                     n_epochs=job["epochs"], n_epochs_decay=job["epochs"])
    model.on_train_epoch_end = lambda: None
    trainer = pl.Trainer(accelerator="auto", devices=1, max_epochs=job["epochs"], precision=config["precision"],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                         limit_train_batches=job["steps_per_epoch"], callbacks=[SpeedOptions(**config["speed"]), recorder])
    data = I2IDataModule("builtin", load_size=72, crop_size=64, batch_size=1, num_workers=0, seed=job["seed"])
    start = time.perf_counter()
    trainer.fit(model, data)
    return {**job, "seconds": time.perf_counter() - start, "losses": recorder.steps}


def protocol_losses(config: dict, seed: int, steps: int, dataset: str, load_size: int, crop_size: int,
                    model_args: dict | None = None, num_workers: int = 0, callbacks: tuple = ()) -> dict:
    """The first `steps` steps of CycleGAN's paper protocol (its config: widths, losses, Adam, batch 1,
    resize `load_size` / random crop `crop_size` / flip) on `dataset`: every per-step loss.

    `config` is a speed configuration ({"speed", "precision", optional "benchmark"}); `model_args`
    override the paper's init arguments (tiny widths for a CPU smoke run).
    """
    import pytorch_lightning as pl

    from i2ibench.data import I2IDataModule
    from i2ibench.methods.speed import SpeedOptions

    pl.seed_everything(seed)
    recorder = loss_recorder(stop_after=steps)
    model = build_model("cyclegan", crop_size, model_args)
    model.on_train_epoch_end = lambda: None  # no sample grids
    trainer = pl.Trainer(accelerator="auto", devices=1, max_epochs=200, precision=config["precision"],
                         benchmark=config.get("benchmark"), logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[SpeedOptions(**config["speed"]), recorder, *callbacks])
    data = I2IDataModule(dataset, load_size=load_size, crop_size=crop_size, batch_size=1, num_workers=num_workers,
                         seed=seed)
    start = time.perf_counter()
    trainer.fit(model, data)
    return {"seconds": time.perf_counter() - start, "losses": recorder.steps[:steps]}


def quality(args) -> None:
    """fp32 with seeds 0 and 1 (their spread is the noise) against the fastest path with seed 0."""
    runs = {}
    for name, config, seed in (("fp32 seed 0", "eager-fp32", 0), ("fp32 seed 1", "eager-fp32", 1),
                               (f"{args.fast} seed 0", args.fast, 0)):
        job = {"mode": "quality", "config": config, "seed": seed, "epochs": 2, "steps_per_epoch": args.quality_steps // 2}
        runs[name] = run_job(job, args.timeout)
        print(f"{name}: {runs[name].get('seconds', float('nan')):.0f} s", flush=True)
    keys = ["train/gen_total", "train/gen_cycle_A", "train/disc_A", "train/disc_B"]
    tail = args.quality_steps // 4
    summary = {name: {k: statistics.fmean(step[k] for step in run["losses"][-tail:]) for k in keys}
               for name, run in runs.items()}
    names = list(runs)
    verdict = {k: {"fast_minus_fp32": summary[names[2]][k] - summary[names[0]][k],
                   "seed_noise": summary[names[1]][k] - summary[names[0]][k]} for k in keys}
    from i2ibench import files

    plot_curves(runs, keys, args.out.with_name("quality_curves.png"))
    files.write_json(args.out.with_name("quality.json"), {"summary_last_quarter": summary, "differences": verdict,
                                                          "runs": {n: {**r, "losses": r["losses"]} for n, r in runs.items()}})
    for k, v in verdict.items():
        print(f"{k:22s} fast - fp32 {v['fast_minus_fp32']:+.4f}   seed 1 - seed 0 {v['seed_noise']:+.4f}")
    print(f"written {args.out.with_name('quality.json')} and quality_curves.png")


def plot_curves(runs: dict, keys: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for axis, key in zip(axes, keys):
        for name, run in runs.items():
            values = [step[key] for step in run["losses"]]
            window = 20
            smooth = [statistics.fmean(values[max(0, i - window):i + 1]) for i in range(len(values))]
            axis.plot(smooth, label=name)
        axis.set_title(key.removeprefix("train/") + f" ({window}-step mean)")
        axis.set_xlabel("step")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


# -- scaling: step time against image size ------------------------------------------------------
def scaling(args) -> None:
    rows = []
    for size in (64, 128, 256):
        job = {"method": "cyclegan", "config": "default", "size": size, "batch": 1, "steps": 6, "warmup": 2}
        rows.append(run_job(job, args.timeout))
        print(f"cyclegan default {size:4d}px b1: {rows[-1].get('median_step_s', float('nan')):.3f} s/step", flush=True)
    from i2ibench import files

    files.write_json(args.out.with_name("scaling.json"), {"rows": rows})


# -- the table ---------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(CPU_SIZES))
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--sizes", choices=("cpu", "paper"), default="paper" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "perf" / "train_speed.json")
    parser.add_argument("--quality", action="store_true", help="loss curves: the fast path against float32")
    parser.add_argument("--quality-steps", type=int, default=400)
    parser.add_argument("--fast", default="bf16", help="the configuration --quality checks")
    parser.add_argument("--scaling", action="store_true", help="step time at 64, 128 and 256 px")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        job = json.loads(args.job)
        print(json.dumps(quality_run(job) if job.get("mode") == "quality" else measure(job)))
        return
    if args.quality:
        return quality(args)
    if args.scaling:
        return scaling(args)
    sizes = CPU_SIZES if args.sizes == "cpu" else PAPER_SIZES
    rows = []
    for method in args.methods.split(","):
        size, batch = sizes[method]
        for config in args.configs.split(","):
            if config == "plain-loop" and method not in PLAIN_LOOP:
                continue
            steps, warmup = args.steps, args.warmup + (6 if "compile" in config else 0)
            if cycle := CYCLE_STEPS.get(method):  # whole cycles of critic and generator steps
                steps, warmup = -(-steps // cycle) * cycle, -(-warmup // cycle) * cycle
            job = {"method": method, "config": config, "size": size, "batch": batch, "steps": steps, "warmup": warmup}
            row = run_job(job, args.timeout)
            rows.append(row)
            shown = f"{row['images_per_s']:8.2f} img/s {row['peak_memory_mb']:8.0f} MB" if "error" not in row \
                else f"error: {row['error'][:80]}"
            print(f"{method:20s} {config:22s} {size:4d}px b{batch}  {shown}", flush=True)
    from i2ibench import files

    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    # Rows measured earlier for other (method, config, size, batch) are kept: the file accumulates,
    # so one method or one option can be re-measured without redoing the rest.
    key = lambda r: (r["method"], r["config"], r["size"], r["batch"])  # noqa: E731
    fresh = {key(r) for r in rows}
    kept = json.loads(args.out.read_text())["rows"] if args.out.is_file() else []
    rows = [r for r in kept if key(r) not in fresh] + rows
    files.write_json(args.out, {"machine": machine, "rows": rows, "ratios": ratios(rows)})
    for line in ratios(rows):
        print(line)
    print(f"written {args.out}")


def ratios(rows: list[dict]) -> list[str]:
    """The target ratios: default vs the plain loop (framework overhead), fastest vs the plain loop."""
    lines = []
    by = {(r["method"], r["config"]): r for r in rows if "error" not in r}
    for method in sorted({r["method"] for r in rows}):
        base = by.get((method, "plain-loop")) or by.get((method, "eager-fp32"))
        if base is None:
            continue
        suite = [r for (m, c), r in by.items() if m == method and c != "plain-loop"]
        fastest = max(suite, key=lambda r: r["images_per_s"], default=None)
        default = by.get((method, "default"))
        text = f"{method}: vs {base['config']}"
        if default:
            text += f"; default step time x{default['median_step_s'] / base['median_step_s']:.3f}"
        if fastest:
            text += f"; fastest ({fastest['config']}) {fastest['images_per_s'] / base['images_per_s']:.2f}x the images/s"
        lines.append(text)
    return lines


if __name__ == "__main__":
    main()
