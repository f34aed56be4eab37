"""Learning curves on a CPU: when does a method beat the `copy-input` reference row?

Run: `python benchmarks/learning_curve.py --method cyclegan --dataset sketch-photo --epochs 30 --every 5`.
Trains one method with a bench protocol's widths and image size (`--protocol`, default smoke:
configs/bench/smoke.yaml; `--set KEY=VALUE` adds overrides) for longer, evaluates the test split
every `--every` epochs (the in-training records of the EvaluationCallback, with their bootstrap
intervals), and prints FID / KID / SSIM(gt) per evaluation beside the dataset's copy-input row
(`runs/<dataset>/<protocol>/_reference`, computed by `make bench DATASET=... PROTOCOL=...` under the
same evaluation settings). Writes results/perf/learning_curve_<method>_<dataset>.json. This is how the `quick`
protocol's image size, widths and steps were chosen from measurements rather than guesses (issue 17).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADLINE = ("fid", "kid_mean", "ssim_gt")


def protocol_arguments(method: str, dataset: str, protocol: dict) -> list[str]:
    """The bench's arguments for this method under a protocol (widths, size), without its schedule limits."""
    from i2ibench.bench.runner import Run, run_arguments
    from i2ibench.data import catalog
    from i2ibench.data.folders import detect_layout
    from i2ibench.data.paired import as_two_domain
    from i2ibench.registry import METHODS, load_all

    load_all()
    layout = detect_layout(as_two_domain(catalog.resolve(dataset)))
    run = Run(method, METHODS.get(method), 0, Path("unused"))
    args = run_arguments(run, dataset, protocol, layout, [])
    # drop the protocol's run length, evaluation cadence and bench bookkeeping: set below
    dropped = {"--trainer.limit_train_batches", "--trainer.max_epochs", "--trainer.check_val_every_n_epoch",
               "--model.init_args.n_epochs", "--model.init_args.n_epochs_decay", "--trainer.default_root_dir",
               "--wandb.group", "--wandb.name", "--wandb.tags", "--wandb.config", "--evaluation.method"}
    kept, skip = [], False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg in dropped:
            skip = True
            continue
        kept.append(arg)
    return kept


def copy_input(dataset: str, protocol_name: str) -> dict:
    """The copy-input reference row's metrics per task, from the protocol's bench's cached reference rows."""
    references = REPO / "runs" / dataset / protocol_name / "_reference"
    for path in sorted(references.glob("*-two-domain/eval/*copy-input.json")):
        record = json.loads(path.read_text())
        return {task: {k: record["metrics"][task].get(k) for k in HEADLINE} for task in record["metrics"]}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="cyclegan")
    parser.add_argument("--dataset", default="sketch-photo")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--every", type=int, default=4, help="evaluate the test split every N epochs")
    parser.add_argument("--decay", type=float, default=0.5, help="share of the epochs with linear lr decay")
    parser.add_argument("--protocol", default="smoke", help="the bench protocol whose widths and size are used")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra CLI override, e.g. --set model.init_args.base_dim=32 (repeatable)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from i2ibench.bench.runner import load_protocol

    protocol = load_protocol(args.protocol)
    root = REPO / "runs" / "curves" / f"{args.method}-{args.dataset}"
    decay = int(args.epochs * args.decay)
    command = [sys.executable, "-m", "i2ibench", "fit", *protocol_arguments(args.method, args.dataset, protocol),
               "--trainer.max_epochs", str(args.epochs), "--trainer.check_val_every_n_epoch", str(args.every),
               "--trainer.default_root_dir", str(root), "--wandb.enabled", "false",
               "--evaluation.method", args.method, "--trainer.enable_progress_bar", "false"]
    if args.method not in ("stargan-v2", "stargan", "munit"):  # epoch-scheduled methods
        command += ["--model.init_args.n_epochs", str(args.epochs - decay),
                    "--model.init_args.n_epochs_decay", str(decay)]
    for setting in args.set:
        key, _, value = setting.partition("=")
        command += [f"--{key}", value]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    seconds = time.perf_counter() - start
    points = []
    for path in sorted((root / "eval").glob("*.json"), key=lambda p: json.loads(p.read_text())["step"]):
        record = json.loads(path.read_text())
        points.append({"epoch": record["epoch"], "step": record["step"], "split": record["dataset"]["split"],
                       "metrics": {task: {k: values.get(k) for k in HEADLINE} | {
                           "intervals": {k: values.get("intervals", {}).get(k) for k in HEADLINE}}
                           for task, values in record["metrics"].items()}})
    reference = copy_input(args.dataset, protocol["protocol"])
    for point in points:
        for task, values in point["metrics"].items():
            ref = reference.get(task, {})
            shown = "  ".join(f"{k} {values[k]:.4g}" + (f" (copy-input {ref[k]:.4g})" if ref.get(k) is not None else "")
                              for k in HEADLINE if values.get(k) is not None)
            print(f"epoch {point['epoch']:3d} step {point['step']:5d} {task:8s} {shown}")
    from i2ibench import files

    out = args.out or REPO / "results" / "perf" / f"learning_curve_{args.method}_{args.dataset}.json"
    files.write_json(out, {"method": args.method, "dataset": args.dataset, "command": command[3:],
                           "wall_s": seconds, "copy_input": reference, "points": points,
                           "protocol": args.protocol, "extra": args.set,
                           "protocol_overrides": protocol["methods"].get(args.method)})
    print(f"{seconds:.0f} s; written {out}")


if __name__ == "__main__":
    main()
