"""The `i2ibench` verbs that are not Lightning runs: eval, bench, compare, data. Each parses its own arguments."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from i2ibench.data.images import DataError


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
    own, _, extra = _split_extra(argv)
    args = parser.parse_args(own)
    if args.devices and args.devices not in ("1", "auto"):
        extra = ["--trainer.devices", args.devices, "--trainer.strategy", "ddp", *extra]
    if args.num_nodes:
        extra = ["--trainer.num_nodes", str(args.num_nodes), *extra]
    try:
        if args.ablation:
            return ablate(args.ablation, args.dataset, args.protocol, args.seeds, args.results_dir, args.runs_dir, extra)
        return bench(args.dataset or "builtin", args.protocol or "smoke", args.methods, args.seeds, args.results_dir,
                     args.runs_dir, extra)
    except DataError as err:
        parser.exit(2, f"i2ibench bench: error: {err}\n")


def _split_extra(argv: list[str]) -> tuple[list[str], str, list[str]]:
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], "--", argv[at + 1:]
    return argv, "", []


def _compare(argv: list[str]) -> int:
    from i2ibench import files
    from i2ibench.bench.report import compare

    parser = argparse.ArgumentParser(prog="i2ibench compare",
                                     description="Side-by-side table of two result folders (results/<dataset>/<protocol>).")
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--selection", default="last", choices=("last", "best-on-validation"))
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    for folder in (args.a, args.b):
        if not (folder / "results.json").is_file():
            parser.exit(2, f"i2ibench compare: error: {folder}/results.json not found (run `i2ibench bench` first)\n")
    table = compare(args.a, args.b, args.selection)
    print(table)
    if args.out:
        files.write_text(args.out, table)
    return 0


def _data(argv: list[str]) -> int:
    from i2ibench.data import catalog
    from i2ibench.data.folders import detect_layout

    parser = argparse.ArgumentParser(prog="i2ibench data", description="Dataset catalog: list, fetch, prepare, check.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="every catalog dataset: kind, layout, size, whether it is available here")
    fetch = verbs.add_parser("fetch", help="download (or generate) a catalog dataset now")
    fetch.add_argument("name")
    prepare = verbs.add_parser("prepare", help="convert a raw dataset folder into the suite's layout")
    prepare.add_argument("name")
    prepare.add_argument("--from", dest="source", type=Path, required=True)
    check = verbs.add_parser("check", help="detect the layout of a dataset and check every image")
    check.add_argument("dataset")
    args = parser.parse_args(argv)
    try:
        if args.verb == "list":
            for name, entry in sorted(catalog.entries().items()):
                here = "available" if entry.kind == "builtin" or entry.folder.is_dir() else f"not yet ({entry.kind})"
                print(f"{name:24s} {entry.layout:13s} {entry.image_size:4d}px  paired test: "
                      f"{'yes' if entry.paired_test else 'no ':3s}  {here:22s} {entry.source}")
        elif args.verb == "fetch":
            print(catalog.resolve(args.name))
        elif args.verb == "prepare":
            print(catalog.prepare(args.name, args.source))
        elif args.verb == "check":
            from i2ibench.data import I2IDataModule

            datamodule = I2IDataModule(dataset=args.dataset, num_workers=0)
            datamodule.prepare_data()
            datamodule.setup("fit")
            layout = detect_layout(catalog.resolve(args.dataset))
            for split, domains in datamodule.images.items():
                counts = ", ".join(f"{d}: {len(p)}" for d, p in domains.items())
                paired = " (paired by name)" if split != "train" and datamodule.is_paired(split) else ""
                print(f"{split:5s} {counts}{paired}")
            print(f"{layout.root}: {layout.kind} layout{' with masks' if layout.has_masks else ''}; all images OK")
    except DataError as err:
        parser.exit(2, f"i2ibench data: error: {err}\n")
    return 0


VERBS: dict[str, Callable[[list[str]], int | None]] = {
    "eval": _eval, "bench": _bench, "compare": _compare, "data": _data,
}
