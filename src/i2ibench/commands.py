"""The `i2ibench` verbs that are not Lightning runs: eval, bench, compare, report, data. Each parses its own
arguments."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from i2ibench.errors import ConfigError


def _eval(argv: list[str]) -> int:
    from i2ibench.metrics.folder_eval import main

    return main(argv)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _names(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def _bench(argv: list[str]) -> int:
    from i2ibench.bench.runner import ablate, bench

    parser = argparse.ArgumentParser(prog="i2ibench bench", description=(
        "Train and evaluate every applicable method x seed on one dataset, then write result tables. "
        "Arguments after `--` go to every run's LightningCLI (e.g. -- --trainer.accelerator gpu)."))
    parser.add_argument("--dataset", default=None, help="catalog name (see `i2ibench data list`) or a folder "
                                                        "(default: builtin, or the ablation's)")
    parser.add_argument("--protocol", default=None, help="smoke or paper (configs/bench/), or a protocol YAML path")
    parser.add_argument("--ablation", type=Path, help="sweep one setting instead (configs/ablations/*.yaml)")
    parser.add_argument("--methods", type=_names, help="comma-separated (default: every applicable method)")
    parser.add_argument("--seeds", type=_ints, help="comma-separated (default: the protocol's)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--devices", help="devices per run (Lightning's --trainer.devices); >1 runs DDP")
    parser.add_argument("--num-nodes", type=int, help="nodes per run (Lightning's --trainer.num_nodes)")
    parser.add_argument("--best-on-test", action="store_true",
                        help="also tables at each run's best in-training TEST evaluation (optimistic: the CUT / UNSB "
                             "papers' convention; only datasets without a val split evaluate the test set in training)")
    own, _, extra = _split_extra(argv)
    args = parser.parse_args(own)
    if args.devices and args.devices not in ("1", "auto"):
        extra = ["--trainer.devices", args.devices, "--trainer.strategy", "ddp", *extra]
    if args.num_nodes:
        extra = ["--trainer.num_nodes", str(args.num_nodes), *extra]
    # A bad dataset, protocol or method name raises a UserError: `main` prints it as one line, exit 2.
    if args.ablation:
        return ablate(args.ablation, args.dataset, args.protocol, args.seeds, args.results_dir, args.runs_dir, extra)
    return bench(args.dataset or "builtin", args.protocol or "smoke", args.methods, args.seeds, args.results_dir,
                 args.runs_dir, extra, best_on_test=args.best_on_test)


def _split_extra(argv: list[str]) -> tuple[list[str], str, list[str]]:
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], "--", argv[at + 1:]
    return argv, "", []


def _compare(argv: list[str]) -> int:
    from i2ibench import files
    from i2ibench.bench.report import SELECTIONS, compare

    parser = argparse.ArgumentParser(prog="i2ibench compare", description=(
        "Two result folders (results/<dataset>/<protocol>) side by side: per task, method and metric, B - A "
        "and whether it is beyond the uncertainty of both (paired over seeds and over test images where both "
        "have them): `A better`, `B better`, `not significant` or `no uncertainty`."))
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--selection", default="last", choices=SELECTIONS,
                        help="checkpoint selection to compare (best-on-test: only if both benches made it)")
    parser.add_argument("--level", type=_level, default=0.95, help="confidence level of the intervals (default 0.95)")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    for folder in (args.a, args.b):
        if not (folder / "results.json").is_file():
            parser.exit(2, f"i2ibench compare: error: {folder}/results.json not found (run `i2ibench bench` first)\n")
    table = compare(args.a, args.b, args.selection, args.level)
    print(table)
    if args.out:
        files.write_text(args.out, table)
    return 0


def _report(argv: list[str]) -> int:
    from i2ibench.bench.html_report import write_html_report

    parser = argparse.ArgumentParser(prog="i2ibench report", description=(
        "Write report.html in a results folder (results/<dataset>/<protocol>) from its results.md and pictures: "
        "one static page (no server, no network) with the summary, sample strips, tables and training curves. "
        "`i2ibench bench` writes it too; rerun this after editing the folder."))
    parser.add_argument("folder", type=Path, help="a results folder written by `i2ibench bench`")
    args = parser.parse_args(argv)
    print(write_html_report(args.folder))  # no results.md: a UserError, one line and exit status 2
    return 0


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1 (e.g. 0.95), got {text!r}")
    return value


def _data(argv: list[str]) -> int:
    from i2ibench.data import catalog

    if argv[:1] == ["check"]:  # its own parser: it takes the datamodule's options, as `fit` does
        return _data_check(argv[1:])
    parser = argparse.ArgumentParser(prog="i2ibench data", description="Dataset catalog: list, fetch, prepare, check.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="every catalog dataset: kind, layout, size, whether it is available here")
    fetch = verbs.add_parser("fetch", help="download (or generate) a catalog dataset now")
    fetch.add_argument("name")
    prepare = verbs.add_parser("prepare", help="convert a raw dataset folder into the suite's layout")
    prepare.add_argument("name")
    prepare.add_argument("--from", dest="source", type=Path, required=True)
    verbs.add_parser("check", help="check a dataset as `fit` would: layout, every image and mask, sizes against "
                                   "the crop (`i2ibench data check --help`)")
    args = parser.parse_args(argv)
    # Data errors are UserErrors: `main` prints them as one line and exits with status 2.
    if args.verb == "list":
        for name, entry in sorted(catalog.entries().items()):
            here = "available" if entry.kind == "builtin" or entry.folder.is_dir() else f"not yet ({entry.kind})"
            print(f"{name:24s} {entry.layout:13s} {entry.image_size:4d}px  paired test: "
                  f"{'yes' if entry.paired_test else 'no ':3s}  {here:22s} {entry.source}")
    elif args.verb == "fetch":
        print(catalog.resolve(args.name))
    elif args.verb == "prepare":
        print(catalog.prepare(args.name, args.source))
    return 0


def _config_data_section(path: str, option: str) -> dict:
    """The `data:` section of a LightningCLI config file (its other sections are `fit`'s business)."""
    import yaml

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{option} {path}: config file not found")
    try:
        config = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{option} {path}: not valid YAML ({str(err).splitlines()[0]})") from err
    data = config.get("data") if isinstance(config, dict) else None
    if isinstance(data, dict) and "init_args" in data:
        data = data["init_args"]
    return dict(data or {})


def _data_options(argv: list[str]) -> list[str]:
    """`--config FILE` and `--method NAME` become the data sections they hold, in place, so later options win."""
    import json

    from i2ibench.registry import METHODS

    out, k = [], 0
    while k < len(argv):
        arg = argv[k]
        name, eq, value = arg.partition("=")
        if name in ("--config", "--method"):
            if not eq:
                if k + 1 >= len(argv):
                    raise ConfigError(f"{name} needs a value (a config file, or a name from `i2ibench methods`)")
                k, value = k + 1, argv[k + 1]
            path = value if name == "--config" else str(METHODS.get(value).config_path)
            out += ["--data", json.dumps(_config_data_section(path, name))]
        else:
            out.append(arg)
        k += 1
    return out


def _data_check(argv: list[str]) -> int:
    """Everything `fit` checks before training, without training: layout, options, images, masks, sizes."""
    from jsonargparse import ArgumentParser

    from i2ibench.data import I2IDataModule, catalog
    from i2ibench.data.folders import detect_layout
    from i2ibench.data.paired import as_two_domain

    parser = ArgumentParser(prog="i2ibench data check", description=(
        "Check a dataset as `fit` would, before training: the layout, every image (decodable, not truncated, "
        "no dangling or looping links), every instance mask (size, values, names) and image sizes against "
        "the crop. Takes fit's --config files, --method and --data.* options; later ones win."))
    parser.add_argument("dataset", nargs="?", default=None, help="catalog name or folder (else data.dataset)")
    parser.add_argument("--config", help="a fit config file; its data: section is used (repeatable)")
    parser.add_argument("--method", help="a method name: its config's data: section (e.g. instagan: mask mode)")
    parser.add_class_arguments(I2IDataModule, "data")
    config = parser.parse_args(_data_options(argv))
    options = config.data.as_dict()
    if config.dataset:
        options["dataset"] = config.dataset
    options["num_workers"] = 0
    root = catalog.resolve(I2IDataModule(**options).dataset)  # options checked, dataset obtained if need be
    layout = detect_layout(as_two_domain(root))  # a side-by-side folder is read as its split halves
    _check_mask_folders(layout)
    if options["mode"] == "auto" and layout.has_masks:
        options["mode"] = "mask"  # check the masks whenever the dataset has them: mask methods will read them
    datamodule = I2IDataModule(**options)
    datamodule.setup("fit")
    transform = datamodule.train_transform
    sizes = (f"preprocess {transform.preprocess}, load_size {transform.load_size}, crop_size {transform.crop_size}"
             if hasattr(transform, "preprocess") else f"img_size {datamodule.eval_transform.crop_size}")
    print(f"{layout.root}: {layout.kind} layout{' with masks' if layout.has_masks else ''}; "
          f"checked for {datamodule.mode} training with {sizes}")
    for split, domains in datamodule.images.items():
        counts = []
        for domain, paths in domains.items():
            masks = (f" ({sum(len(datamodule.masks.get(p, ())) for p in paths)} masks used)"
                     if datamodule.mode == "mask" else "")
            counts.append(f"{domain}: {len(paths)} images{masks}")
        paired = " (paired by name)" if split != "train" and datamodule.is_paired(split) else ""
        print(f"{split:5s} {', '.join(counts)}{paired}")
    print("all images" + (" and masks" if datamodule.mode == "mask" else "") + " OK")
    return 0


def _check_mask_folders(layout) -> None:
    """A `_seg` folder for some domains but not all would make every mask be ignored: say which is missing."""
    from i2ibench.data.images import DataError

    if layout.kind != "two-domain" or layout.has_masks:
        return
    present = sorted(p.name for p in layout.root.glob("*_seg") if p.is_dir())
    if present:
        missing = [f"train{d}_seg" for d in layout.domains if not (layout.root / f"train{d}_seg").is_dir()]
        raise DataError(f"{layout.root}: has {', '.join(present)}/ but not {', '.join(missing)}/, so its masks "
                        "would be ignored; a mask dataset needs trainA_seg/ and trainB_seg/ (and testA_seg/ testB_seg/).")


VERBS: dict[str, Callable[[list[str]], int | None]] = {
    "eval": _eval, "bench": _bench, "compare": _compare, "report": _report, "data": _data,
}
