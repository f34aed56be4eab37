"""`i2ibench bench`: every applicable method x seed on one dataset under one protocol, then tables.

A protocol (`configs/bench/<name>.yaml`) fixes the seeds, the image size and the LightningCLI
overrides of every run (smoke: minutes on a CPU; paper: each method as published). Runs live
in `runs/<dataset>/<protocol>/<method>/seed<k>/`; a finished run has `done.json` and is
skipped, an interrupted one resumes from its last checkpoint. Tables are written by
`bench.report` from the evaluation records alone.

Before the runs, the reference rows `copy-input` and `real-target` (see `bench.reference_rows`)
are computed once per dataset and evaluation configuration, in their own process, under
`runs/<dataset>/<protocol>/_reference/`; a rerun finds them and skips them like finished runs.

On a multi-domain dataset, a two-domain method (MUNIT, DRIT++, MSGAN by default; any other when
named in `--methods`) is trained once per pair of domains, as StarGAN v2's paper trained its
baselines: each pair is a two-domain view of the dataset (symlinks `trainA -> train/<s>`, ... under
`runs/<dataset>/<protocol>/_pairs/<s>-<t>/`), and its records name the tasks by the dataset's
domains (`s->t@latent`), so that its row lines up with the multi-domain methods'.

A run that fails (a non-finite loss, bad input, a crash, a kill) does not stop the bench: its
reason, read from the `failed.json` that `run_one` writes, goes into the tables in place of its
numbers, the other runs go on, the tables are written, and the bench exits with status 1.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from i2ibench.bench import reference_rows, report
from i2ibench.bench.run_one import DONE, FAILED
from i2ibench.data import catalog
from i2ibench.data.folders import Layout, detect_layout, split_images
from i2ibench.data.paired import as_two_domain, unpaired_reason
from i2ibench.registry import CONFIG_DIR, METHODS, MethodSpec, load_all


@dataclass(frozen=True)
class Run:
    """One training run: a method (or an ablation point of one) with one seed."""

    name: str  # the row in the result table: the method, or e.g. "cyclegan[lambda_identity=0.1]"
    method: MethodSpec
    seed: int
    root: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None  # a pair's two-domain view of a multi-domain dataset (None: the bench's dataset)
    pair: tuple[str, str] | None = None

    @property
    def label(self) -> str:
        return self.name + (f" ({self.pair[0]}-{self.pair[1]})" if self.pair else "")

    @property
    def done(self) -> bool:
        return (self.root / DONE).is_file()

    def failure(self, returncode: int) -> str:
        """Why the run did not finish: run_one's `failed.json`, else what the exit status tells."""
        try:
            return json.loads((self.root / FAILED).read_text())["reason"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if returncode < 0:
            return f"killed by signal {-returncode}; see the output above and {self.root}"
        if returncode == 0:
            return f"ended without {DONE}; see the output above and {self.root}"
        return f"exit status {returncode}, no reason recorded; see the output above and {self.root}"


def load_protocol(name: str) -> dict[str, Any]:
    """configs/bench/<name>.yaml, or a protocol YAML file given by path."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONFIG_DIR / "bench" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_DIR / "bench").glob("*.yaml"))
        raise SystemExit(f"unknown protocol {name!r}; known: {', '.join(known)} (or a path to a protocol YAML)")
    return yaml.safe_load(path.read_text())


# Two-domain methods run per domain pair on multi-domain data without being named: StarGAN v2's
# baselines (its paper, sec. 4). Others (the CycleGAN family, ...) run per pair only when named in
# --methods, so that `make bench DATASET=builtin-multi` stays within minutes.
PER_PAIR_BY_DEFAULT = ("munit", "drit", "msgan")
PAIRS_FOLDER = "_pairs"


def runs_per_pair(spec: MethodSpec, layout: Layout) -> bool:
    """Whether `spec` is trained once per pair of domains of this dataset (a two-domain model on more domains)."""
    return spec.dataset_mode == "two-domain" and layout.kind == "multi-domain" and len(layout.domains) > 2


def pair_view(layout: Layout, pair: tuple[str, str], folder: Path) -> Path:
    """A two-domain folder of symlinks to one pair's domain folders: trainA -> <root>/train/<s>, trainB -> ..."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        if not layout.has_split(split):
            continue
        for letter, domain in zip("AB", pair):
            link, target = folder / f"{split}{letter}", (layout.root / split / domain).resolve()
            if link.is_symlink() and link.resolve() == target:
                continue
            temporary = folder / f".{split}{letter}.tmp"
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(target, target_is_directory=True)
            os.replace(temporary, link)  # atomic: a rerun never sees a half-made view
    return folder


def not_applicable(spec: MethodSpec, layout: Layout) -> str | None:
    """Why a method cannot run on a dataset of this layout (None when it can)."""
    if spec.dataset_mode == "mask" and not layout.has_masks:
        return "needs instance masks (trainA_seg/ ...); this dataset has none"
    if spec.dataset_mode == "two-domain" and len(layout.domains) != 2 and not runs_per_pair(spec, layout):
        return f"translates between two domains; this dataset has {len(layout.domains)}"
    if spec.dataset_mode == "paired":
        if len(layout.domains) != 2:
            return f"needs paired two-domain data; this dataset has {len(layout.domains)} domains"
        if reason := unpaired_reason(*split_images(layout, "train").values()):
            return f"needs paired training data (trainA/ trainB/ with the same file names): {reason}"
    return None


def default_methods(dataset: str) -> list[str] | None:
    """The methods a catalog dataset benches when none are named (`catalog.bench_methods` in its config),
    or None: every applicable method."""
    entry = catalog.entries().get(dataset)
    return entry.options.get("bench_methods") if entry is not None else None


def default_method_set(dataset: str, protocol: dict) -> tuple[list[str] | None, str]:
    """The methods a bench runs when none are named, and where that set is chosen: the protocol's own
    `default_methods` (a longer protocol affords fewer methods in its time budget), else the dataset's
    `bench_methods` (`make bench` within 10 minutes), else None: every applicable method."""
    if protocol.get("default_methods") is not None:
        chosen = protocol["default_methods"]
        source = (f"the {protocol['protocol']} protocol's default set (default_methods in its protocol YAML, "
                  f"chosen to keep the bench within its time budget)")
    else:
        chosen = default_methods(dataset)
        source = (f"{dataset}'s default set (bench_methods in configs/datasets/{dataset}.yaml, chosen to keep "
                  f"`make bench` within 10 minutes)")
    for name in chosen or ():
        METHODS.get(name)  # a misspelt name in either config fails here, naming the known ones
    return chosen, source


def dataset_label(dataset: str) -> str:
    return dataset if dataset in catalog.entries() else Path(dataset).expanduser().resolve().name


def run_arguments(run: Run, dataset: str, protocol: dict, layout: Layout, extra: list[str],
                  group: str | None = None) -> list[str]:
    """The LightningCLI arguments of one run: dataset config, method config, then protocol overrides."""
    args: list[str] = []
    entry = catalog.entries().get(dataset)
    if entry is not None:
        args += ["--config", str(entry.config)]
    args += ["--config", str(run.method.config_path), "--data.dataset", run.dataset or dataset]
    size = protocol.get("image_size")
    if size:  # CycleGAN's resize-then-crop ratio, 286 / 256, at the protocol's size
        args += ["--data.crop_size", str(size), "--data.load_size", str(round(size * 286 / 256))]
    overrides = {**protocol.get("args", {}), **protocol.get("methods", {}).get(run.method.name, {}), **run.overrides}
    for key, value in overrides.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)]
    label = dataset_label(dataset)
    args += ["--seed_everything", str(run.seed), "--trainer.default_root_dir", str(run.root),
             "--evaluation.method", run.name,
             "--wandb.group", group or f"{label}/{protocol['protocol']}", "--wandb.name", f"{run.name}/seed{run.seed}",
             "--wandb.tags", json.dumps([run.method.name, label, protocol["protocol"]]),
             "--wandb.config", json.dumps({"bench_run": run.name, **run.overrides})]
    if layout.has_split("val"):  # keep the best checkpoint on validation FID as well as the last one
        args += ["--checkpoint.monitor", "val/fid_mean", "--checkpoint.mode", "min",
                 "--checkpoint.save_top_k", "1", "--checkpoint.filename", "best"]
    return args + extra


def plan(dataset: str, protocol: dict, methods: list[str] | None, seeds: list[int] | None,
         runs_dir: Path) -> tuple[Layout, list[Run], dict[str, str]]:
    load_all()
    layout = detect_layout(as_two_domain(catalog.resolve(dataset)))  # side-by-side: its split halves
    names = methods or METHODS.names()
    skipped = {}
    default_set, set_source = (None, "") if methods else default_method_set(dataset, protocol)
    runs = []
    base = runs_dir / dataset_label(dataset) / protocol["protocol"]
    for name in names:
        spec = METHODS.get(name)
        if reason := not_applicable(spec, layout):
            skipped[name] = reason
            continue
        if default_set is not None and name not in default_set:
            skipped[name] = f"not in {set_source}; run it with --methods {name}"
            continue
        if runs_per_pair(spec, layout):
            if methods is None and name not in PER_PAIR_BY_DEFAULT:
                skipped[name] = (f"translates between two domains; name it in --methods to train it once per pair "
                                 f"of this dataset's {len(layout.domains)} domains")
                continue
            for pair in itertools.combinations(layout.domains, 2):
                view = pair_view(layout, pair, base / PAIRS_FOLDER / "-".join(pair))
                runs += [Run(name, spec, seed, base / name / "-".join(pair) / f"seed{seed}",
                             {"evaluation.domain_names": {"A": pair[0], "B": pair[1]},
                              "evaluation.dataset_name": dataset}, str(view), pair)
                         for seed in (seeds or protocol["seeds"])]
            continue
        runs += [Run(name, spec, seed, base / name / f"seed{seed}") for seed in (seeds or protocol["seeds"])]
    return layout, runs, skipped


def bench(dataset: str, protocol_name: str = "smoke", methods: list[str] | None = None,
          seeds: list[int] | None = None, results_dir: Path = Path("results"), runs_dir: Path = Path("runs"),
          extra: list[str] | None = None, best_on_test: bool = False) -> int:
    """`best_on_test`: also the optimistic tables at each run's best in-training test evaluation (the
    CUT / UNSB papers' convention; only datasets without a val split evaluate the test set in training)."""
    protocol = load_protocol(protocol_name)
    layout, runs, skipped = plan(dataset, protocol, methods, seeds, runs_dir)
    out = results_dir / dataset_label(dataset) / protocol["protocol"]
    references = runs_dir / dataset_label(dataset) / protocol["protocol"] / reference_rows.FOLDER
    return execute(runs, dataset, protocol, layout, extra or [], out, skipped, reference_dir=references,
                   best_on_test=best_on_test)


def ablate(path: Path, dataset: str | None = None, protocol_name: str | None = None, seeds: list[int] | None = None,
           results_dir: Path = Path("results"), runs_dir: Path = Path("runs"), extra: list[str] | None = None) -> int:
    """A sweep of one config value (`configs/ablations/*.yaml`): one row and one W&B run per value,
    all runs in one W&B group, the swept value a W&B config field."""
    load_all()
    sweep = yaml.safe_load(Path(path).read_text())
    dataset = dataset or sweep.get("dataset", "builtin")
    protocol = load_protocol(protocol_name or sweep.get("protocol", "smoke"))
    protocol = {**protocol, "args": {**protocol.get("args", {}), **sweep.get("args", {})}}
    layout = detect_layout(as_two_domain(catalog.resolve(dataset)))  # side-by-side: its split halves
    spec = METHODS.get(sweep["method"])
    name = f"ablation-{sweep['ablation']}"
    base = runs_dir / dataset_label(dataset) / protocol["protocol"] / name
    # `parameter`: one config key, or a list of keys that all take the swept value (e.g. both cycle weights)
    parameters = sweep["parameter"] if isinstance(sweep["parameter"], list) else [sweep["parameter"]]
    short = sweep.get("label") or parameters[0].rsplit(".", 1)[-1]
    runs = [Run(f"{spec.name}[{short}={value}]", spec, seed, base / f"{short}={value}" / f"seed{seed}",
                {key: value for key in parameters})
            for value in sweep["values"] for seed in (seeds or sweep.get("seeds") or protocol["seeds"])]
    group = f"{name}/{dataset_label(dataset)}/{protocol['protocol']}"
    out = results_dir / dataset_label(dataset) / name
    references = runs_dir / dataset_label(dataset) / protocol["protocol"] / reference_rows.FOLDER
    return execute(runs, dataset, protocol, layout, extra or [], out, {}, group, references)


def reference_arguments(runs: list[Run], dataset: str, protocol: dict, layout: Layout, extra: list[str],
                        group: str | None = None) -> list[list[str]]:
    """The LightningCLI arguments of one run per table row: what the reference rows are evaluated like."""
    first = {}
    for run in runs:
        first.setdefault(run.name, run)
    arguments = []
    for run in first.values():
        if run.pair:  # per-pair runs are judged on the dataset's multi-domain tasks: their references are those
            whole = replace(run, overrides={}, dataset=None, pair=None)
            arguments.append(run_arguments(whole, dataset, protocol, layout, extra, group) + ["--data.mode", "multi-domain"])
        else:
            arguments.append(run_arguments(run, dataset, protocol, layout, extra, group))
    return arguments


def execute(runs: list[Run], dataset: str, protocol: dict, layout: Layout, extra: list[str], out: Path,
            skipped: dict[str, str], group: str | None = None, reference_dir: Path | None = None,
            best_on_test: bool = False) -> int:
    """Compute the reference rows (once), run what is not done yet (each in its own process), then
    write the result tables.

    Returns 1 when a run or the reference rows failed (the tables say why), else 0.
    """
    failed: dict[str, dict[int, str]] = {}  # row name -> {seed: reason}
    reference_roots, reference_failure = [], None
    if reference_dir is not None and runs:
        reference_roots, reference_failure = reference_rows.ensure(
            reference_arguments(runs, dataset, protocol, layout, extra, group), reference_dir)
        if reference_failure:
            print(f"reference rows failed: {reference_failure}", flush=True)
    for i, run in enumerate(runs, 1):
        label = f"[{i}/{len(runs)}] {run.label} seed {run.seed}"
        if run.done:
            print(f"{label}: done earlier, skipped ({run.root})", flush=True)
            continue
        print(f"{label}: {'resuming' if (run.root / 'checkpoints' / 'last.ckpt').is_file() else 'starting'} "
              f"in {run.root}", flush=True)
        (run.root / FAILED).unlink(missing_ok=True)  # an earlier attempt's reason; this attempt writes its own
        start = time.perf_counter()
        command = [sys.executable, "-m", "i2ibench.bench.run_one",
                   *run_arguments(run, dataset, protocol, layout, extra, group)]
        result = subprocess.run(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        seconds = time.perf_counter() - start
        report.record_wall_time(run.root, run.label, run.seed, seconds)
        elapsed = f"{seconds:.0f} s"
        if result.returncode != 0 or not run.done:
            reason = run.failure(result.returncode)
            failed.setdefault(run.name, {})[run.seed] = (f"pair {'-'.join(run.pair)}: " if run.pair else "") + reason
            print(f"{label}: failed after {elapsed}: {reason}", flush=True)
        else:
            print(f"{label}: finished in {elapsed}", flush=True)
    report.write_results(out, [run.root for run in runs], skipped, failed, reference_roots, reference_failure,
                         best_on_test=best_on_test)
    print(f"\nresults: {out}/results.md")
    if failed:
        count = sum(len(seeds) for seeds in failed.values())
        print(f"{count} run{'s' if count > 1 else ''} failed: {', '.join(sorted(failed))} (reasons in the tables)")
    wandb_runs = sorted({str(p.parent) for run in runs for p in (run.root / "wandb").glob("offline-run-*/run-*.wandb")})
    if wandb_runs:
        print("upload the W&B runs later with:\n  wandb sync " + " ".join(wandb_runs))
    return 1 if failed or reference_failure else 0
