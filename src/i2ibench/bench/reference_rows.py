"""Reference rows of every result table: `copy-input` and `real-target`, computed from the data alone.

- `copy-input`: the translation is the source image itself (A2B: the testA images scored against
  testB). The number a method must beat; its content metrics against the source are perfect, its
  SSIM / PSNR against a paired ground truth are the do-nothing baseline.
- `real-target`: held-out real images of the target domain scored as if they were translations:
  a seeded sample (the metric seed) of the target domain's TRAINING images, as many as a method
  produces for the task. The best score reachable at that N without scoring the real set against
  itself (which would give FID 0). Its content metrics are undefined (no image corresponds to a
  source or a ground truth) and are reported unavailable with that reason.

Both go through a method's evaluation exactly: the datamodule and the EvaluationCallback settings
are parsed from a run's own LightningCLI arguments (dataset config, method config, protocol
overrides), images are resized by the datamodule's evaluation transform, quantised to 8 bits and
scored by the same `Evaluator` against the same real test set (its cached features), so the rows
carry the same protocol card as the methods and share their table columns. They are not
LightningModules and never trained.

Records are ordinary evaluation records (`method: copy-input` / `real-target`, checkpoint
selection `reference`, plus a `reference` entry saying what the row is), written under
`runs/<dataset>/<protocol>/_reference/<key>/eval/`, where the key digests everything the numbers
depend on (dataset files, image size, metric settings, weights): a rerun of the bench finds them
and computes nothing. `python -m i2ibench.bench.reference_rows REQUEST` computes them in their own
process (as `run_one` trains): REQUEST is a JSON file {"arguments": [[LightningCLI args], ...]}, one
list per bench row; the answer (record folders, or the failure) is written next to it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from i2ibench import files

FOLDER = "_reference"  # under runs/<dataset>/<protocol>/ (no method name starts with "_")
KINDS = ("copy-input", "real-target")
SELECTION = "reference"  # the records' checkpoint selection: no checkpoint, never a "last" or "best"
DONE = "done.json"
KEY_VERSION = 2  # bump when what the rows compute changes, so cached rows are recomputed (2: per task family)
DESCRIPTION = {
    "copy-input": "the source test images scored as their own translations (the number to beat)",
    "real-target": "held-out real target-domain images (a seeded sample of its training split, as many as a "
                   "method's translations) scored as translations (the best score reachable at that N)",
}
NO_COUNTERPART = ("undefined for real-target: its images are other images of the target domain, none corresponds "
                  "to a source image or a ground truth")


# -- bench side: one subprocess for all rows ---------------------------------------------------------
def ensure(arguments: list[list[str]], reference_dir: Path) -> tuple[list[Path], str | None]:
    """The reference record folders for these runs (computed now, or found from an earlier bench).

    `arguments`: the LightningCLI arguments of one run per table row. Returns (folders, failure
    reason or None); a failure does not stop the bench, its reason goes into the tables.
    """
    reference_dir = Path(reference_dir)
    request = reference_dir / f"request-{os.getpid()}.json"  # per bench process: two benches may share runs/
    answer = answer_path(request)
    files.write_json(request, {"arguments": arguments})
    answer.unlink(missing_ok=True)
    print(f"reference rows ({', '.join(KINDS)}) in {reference_dir}", flush=True)
    result = subprocess.run([sys.executable, "-m", "i2ibench.bench.reference_rows", str(request)],
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        reply = json.loads(answer.read_text())
    except (OSError, ValueError):
        reply = {"folders": [], "failure": f"the reference-row process ended with exit status {result.returncode} "
                                          "and no answer; see the output above"}
    request.unlink(missing_ok=True)
    answer.unlink(missing_ok=True)
    return [Path(p) for p in reply.get("folders", [])], reply.get("failure")


def answer_path(request: Path) -> Path:
    return Path(request).with_name(Path(request).name.replace("request", "answer", 1))


# -- the subprocess ----------------------------------------------------------------------------------
def parse_run(argv: list[str]):
    """A run's resolved configuration (dataset + method config + protocol overrides), nothing instantiated."""
    from i2ibench.cli import I2IBenchCLI  # here, not at the top: the bench imports this module too
    from i2ibench.data import I2IDataModule
    from i2ibench.methods import TranslationModule
    from i2ibench.registry import load_all

    class ParsedOnly(I2IBenchCLI):
        def instantiate_classes(self) -> None:  # only the data and evaluation settings are needed
            pass

    load_all()
    sys.argv = sys.argv[:1]  # LightningCLI warns when args= and command-line arguments both exist
    cli = ParsedOnly(TranslationModule, I2IDataModule, subclass_mode_model=True, run=False, args=argv,
                     seed_everything_default=0, trainer_defaults={"default_root_dir": "runs", "logger": True})
    return cli.config


def evaluation_settings(config) -> dict[str, Any]:
    """The EvaluationCallback arguments that change numbers (not the row name or where records go)."""
    settings = dict(config.evaluation.as_dict())
    for name in ("method", "output_dir", "checkpoint_selection"):
        settings.pop(name, None)
    return settings


def cache_key(config, layout, family: str) -> str:
    """A digest of everything the reference numbers of one task family depend on; equal keys give equal
    rows. The outputs per source count only for @latent / @reference tasks (their real-target sample is
    as large as a method's N x K translations), so runs of other families share their rows whatever K."""
    from i2ibench.data.folders import split_images

    data = config.data
    digest = hashlib.sha256(json.dumps({
        "version": KEY_VERSION, "family": family, "root": str(Path(layout.root).resolve()), "crop_size": data.crop_size,
        "outputs_per_source": data.outputs_per_source if family == "multi-domain" else None,
        "max_instances_eval": data.max_instances_eval,
        "evaluation": evaluation_settings(config),
        "weights_env": os.environ.get("I2IBENCH_INCEPTION_WEIGHTS"),
    }, sort_keys=True, default=str).encode())
    for split in ("test", "train"):
        if layout.has_split(split):
            for domain, paths in sorted(split_images(layout, split).items()):
                for path in paths:
                    stat = path.stat()
                    digest.update(f"|{split}|{domain}|{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def reference_datamodule(config, layout):
    """The run's datamodule settings, in the mode that loads what the references need: masks when
    the dataset has them (background metrics), else plain images; train images for real-target."""
    from i2ibench.data import I2IDataModule

    settings = dict(config.data.as_dict())
    settings["mode"] = "mask" if layout.has_masks and len(layout.domains) == 2 else "unaligned"
    settings["num_workers"] = 0 if settings.get("num_workers") is None else settings["num_workers"]
    datamodule = I2IDataModule(**settings)
    datamodule.prepare_data()
    datamodule.setup("fit" if layout.has_split("train") else "test")
    return datamodule


def task_family(config, layout) -> str:
    """Which tasks a run is judged on: `two-domain` (A2B / B2A), `multi-domain` (`s->t@latent` and
    `s->t@reference`: multi-domain methods, and multimodal ones on two-domain data, whose classes set
    `styled_tasks`), or `label` (`s->t`: methods guided by the target label alone, as StarGAN)."""
    mode = config.data.mode
    multi = mode == "multi-domain" or (mode == "auto" and layout.kind == "multi-domain")
    method = model_class(config)
    if getattr(method, "label_guided", False):
        return "label"
    # a multimodal method on two-domain data (BicycleGAN on pairs, MUNIT) is judged on A->B@latent, ...
    return "multi-domain" if multi or getattr(method, "styled_tasks", False) else "two-domain"


def model_class(config) -> type | None:
    """The method's LightningModule class named by the run's configuration (None when it is not importable)."""
    path = str(getattr(config.model, "class_path", "") or "")
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def reference_tasks(domains: tuple[str, ...], families: set[str]) -> list[str]:
    """The tasks the bench's methods are judged on: A2B and B2A (two-domain methods; a method judged on
    one of them only, as CUT, shows the rows of that one), `s->t@latent` / `s->t@reference` of every
    ordered pair for multi-domain methods (which read a two-domain folder as domains A and B), and
    `s->t` for label-guided ones."""
    from i2ibench.data.tasks import two_domain_tasks

    tasks = two_domain_tasks() if "two-domain" in families and len(domains) == 2 else []
    pairs = [(s, t) for s in domains for t in domains if s != t]
    if "multi-domain" in families:
        tasks += [f"{s}->{t}@{mode}" for mode in ("latent", "reference") for s, t in pairs]
    if "label" in families:
        tasks += [f"{s}->{t}" for s, t in pairs]
    return tasks


def fan_out(tasks: list[str], key) -> dict[str, list[str]]:
    """{task computed: the tasks that get its numbers}, one computed task per distinct `key(task)`:
    a reference row does not depend on how a method is guided (latent or reference image)."""
    groups: dict[Any, list[str]] = {}
    for task in tasks:
        groups.setdefault(key(task), []).append(task)
    return {members[0]: members for members in groups.values()}


def device_for(config) -> str:
    accelerator = str(config.trainer.accelerator)
    return "cuda" if torch.cuda.is_available() and accelerator not in ("cpu",) else "cpu"


def real_features(evaluator, datamodule, targets) -> dict[str, torch.Tensor]:
    """The real test-set features of each target domain: the same set, size and cache as a method's evaluation."""
    crop = datamodule.eval_transform.crop_size
    return {target: evaluator.real_features(datamodule.images["test"][target], crop,
                                            lambda t=target: datamodule.real_dataloader("test", t))[0]
            for target in targets}


def copy_input(evaluator, datamodule, tasks: list[str]) -> tuple[dict, dict, dict]:
    """Metrics of the sources as their own translations, fed exactly as the EvaluationCallback feeds a
    method's: content against the source (and the ground truth, and the background) for two-domain tasks."""
    from i2ibench.data.tasks import parse_task
    from i2ibench.metrics.callback import batch_references, reference_names

    paired, masked = datamodule.is_paired("test"), datamodule.mode == "mask"
    references = {task: reference_names(task, paired, masked) for task in tasks}  # as EvaluationCallback
    counts = {task: len(datamodule.eval_dataset("test", task)) for task in tasks}
    evaluator.begin(references, counts)
    device = evaluator.device
    for task in tasks:
        spec = parse_task(task)
        for batch in DataLoader(datamodule.eval_dataset("test", task), batch_size=datamodule.eval_batch_size):
            source = batch["x"] if spec.mode else batch[spec.source]
            extra = batch_references(spec, batch)
            evaluator.update(task, batch["index"].to(device), source.to(device),
                             **{k: v.to(device) for k, v in extra.items()})
    real = real_features(evaluator, datamodule, {parse_task(t).target for t in tasks})
    metrics, unavailable = evaluator.finish({task: real[parse_task(task).target] for task in tasks})
    notes = {task: {"n_fake": counts[task], "fake": f"test split, domain {parse_task(task).source}"} for task in tasks}
    return metrics, unavailable, notes


def translations_per_task(datamodule, task: str) -> int:
    """How many translations a method produces for `task` (K styles per source for @latent / @reference tasks)."""
    return len(datamodule.eval_dataset("test", task)) * datamodule.styles_per_source(task)


def real_target(evaluator, datamodule, tasks: list[str], content: dict[str, list[str]]) -> tuple[dict, dict, dict]:
    """Metrics of a seeded sample of the target's training images, as many as a method's translations."""
    from i2ibench.data.folders import RealImages
    from i2ibench.data.tasks import parse_task

    if "train" not in datamodule.images:
        reason = "the dataset has no train split, so there are no held-out real target-domain images"
        return {}, {task: {"real-target": reason} for task in tasks}, {task: {"reason": reason} for task in tasks}
    seed = evaluator.settings.seed
    samples, notes = {}, {}
    for task in tasks:
        spec = parse_task(task)
        wanted = translations_per_task(datamodule, task)
        pool = datamodule.images["train"][spec.target]
        # Seeded by the metric seed (in the card); sorted back to file order so loading order is stable.
        picks = np.random.RandomState(seed).choice(len(pool), size=min(wanted, len(pool)), replace=False)
        samples[task] = [pool[i] for i in sorted(picks)]
        notes[task] = {"n_wanted": wanted, "n_fake": len(samples[task]),
                       "fake": f"train split, domain {spec.target} ({len(pool)} images)",
                       "sampling": f"numpy RandomState({seed}).choice(len(pool), n, replace=False), in file order"}
        if len(samples[task]) < wanted:
            notes[task]["short"] = (f"the train split of {spec.target} has only {len(pool)} images, fewer than the "
                                    f"{wanted} translations a method produces: all of them are used")
    evaluator.begin({task: () for task in tasks}, {task: len(samples[task]) for task in tasks})
    device = evaluator.device
    for task in tasks:
        loader = DataLoader(RealImages(samples[task], datamodule.eval_transform), batch_size=datamodule.eval_batch_size)
        for batch in loader:
            evaluator.update(task, batch["index"].to(device), batch["image"].to(device))
    real = real_features(evaluator, datamodule, {parse_task(t).target for t in tasks})
    metrics, unavailable = evaluator.finish({task: real[parse_task(task).target] for task in tasks})
    for task in tasks:
        unavailable[task].update({name: NO_COUNTERPART for name in content.get(task, [])})
    return metrics, unavailable, notes


def spread(per_task: dict, groups: dict[str, list[str]]) -> dict:
    """Per-task values of the computed tasks, given to every task of their group."""
    return {member: per_task[task] for task, members in groups.items() if task in per_task for member in members}


def compute(config, folder: Path, families: set[str]) -> None:
    """Both reference records of one evaluation configuration, written into `folder`/eval/."""
    from i2ibench.data.tasks import parse_task
    from i2ibench.metrics.callback import EvaluationCallback
    from i2ibench.metrics.evaluator import Evaluator
    from i2ibench.metrics.record import build_record

    datamodule = reference_datamodule(config, layout_of(config))
    callback = EvaluationCallback(**config.evaluation.as_dict())  # the run's settings, checked as a run checks them
    evaluator = Evaluator(callback.weights, callback.settings, callback.lpips, device_for(config))
    tasks = reference_tasks(datamodule.domains, families)
    groups = {
        "copy-input": fan_out(tasks, lambda t: (parse_task(t).source, parse_task(t).target, parse_task(t).mode is None)),
        "real-target": fan_out(tasks, lambda t: (parse_task(t).target, translations_per_task(datamodule, t))),
    }
    start = time.perf_counter()
    copied = copy_input(evaluator, datamodule, list(groups["copy-input"]))
    content = spread({task: [n for n in values if n.split("_")[0] in ("ssim", "psnr", "lpips")]
                      for task, values in copied[0].items()}, groups["copy-input"])
    results = {"copy-input": (*copied, {**evaluator.timings, "total_s": time.perf_counter() - start})}
    start = time.perf_counter()
    held_out = real_target(evaluator, datamodule, list(groups["real-target"]),
                           {t: content.get(t, []) for t in groups["real-target"]})
    results["real-target"] = (*held_out, {**evaluator.timings, "total_s": time.perf_counter() - start})
    for kind, (metrics, unavailable, notes, timings) in results.items():
        record = build_record(
            dataset={"name": str(datamodule.dataset), "root": str(datamodule.layout.root), "split": "test",
                     "paired": datamodule.is_paired("test")},
            method=kind, config={"data": dict(datamodule.hparams), "evaluation": evaluation_settings(config)},
            seed=None, step=None, epoch=None, checkpoint={"selection": SELECTION, "path": None},
            protocol=evaluator.card(datamodule.eval_transform.crop_size),
            metrics=spread(metrics, groups[kind]), unavailable=spread(unavailable, groups[kind]), timings=timings)
        record["reference"] = {"kind": kind, "what": DESCRIPTION[kind], "tasks": spread(notes, groups[kind])}
        files.write_json(folder / "eval" / f"test-{kind}.json", record)
    files.write_json(folder / DONE, {"kinds": list(KINDS)})


def layout_of(config):
    from i2ibench.data import catalog
    from i2ibench.data.folders import detect_layout
    from i2ibench.data.paired import as_two_domain

    return detect_layout(as_two_domain(catalog.resolve(config.data.dataset)))


def answer_request(request: Path) -> dict:
    """Compute (or find) the reference rows of every distinct evaluation configuration in the request."""
    arguments = json.loads(Path(request).read_text())["arguments"]
    configs: dict[str, tuple[Any, set[str]]] = {}  # key -> (a run's configuration, task families)
    for argv in arguments:
        try:
            config = parse_run(argv)
        except SystemExit:  # a row whose arguments do not parse: its run fails and says why; the others go on
            print("reference rows: one bench row's arguments do not parse; it is left out", flush=True)
            continue
        layout = layout_of(config)
        family = task_family(config, layout)
        configs.setdefault(cache_key(config, layout, family), (config, set()))[1].add(family)
    folders = []
    for key, (config, families) in configs.items():
        folder = Path(request).parent / f"{key}-{'+'.join(sorted(families))}"
        folders.append(folder)
        if (folder / DONE).is_file():
            print(f"reference rows: done earlier, skipped ({folder})", flush=True)
            continue
        start = time.perf_counter()
        compute(config, folder, families)
        print(f"reference rows: computed in {time.perf_counter() - start:.0f} s ({folder})", flush=True)
    return {"folders": [str(f) for f in folders], "failure": None}


def main(argv: list[str]) -> int:
    from i2ibench.errors import UserError

    request = Path(argv[0])
    answer = answer_path(request)
    try:
        reply = answer_request(request)
    except (UserError, ValueError, OSError, RuntimeError) as err:
        reason = f"{type(err).__name__}: {' '.join(str(err).split())}"
        files.write_json(answer, {"folders": [], "failure": reason})
        print(f"i2ibench: error: reference rows: {reason}", file=sys.stderr, flush=True)
        return 1
    files.write_json(answer, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
