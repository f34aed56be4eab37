"""`i2ibench eval`: the suite's protocol on image folders made by any tool.

Only the images directly in each folder are evaluated; sub-folders are reported on stderr (or, in
a folder with no images of its own, named in the error). Images of another size than the
folder's most common one are resized to it (PIL bicubic) and counted on stderr.
"""

from __future__ import annotations

import argparse
import logging
import queue
import threading
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset

from i2ibench import files
from i2ibench.data.images import DataError, check_images, is_hidden, list_images, load_rgb, raise_for_bad
from i2ibench.data.transforms import to_model_range
from i2ibench.metrics.distribution import TORCH_FIDELITY_SEED
from i2ibench.metrics.evaluator import LPIPS_CHOICES, Evaluator
from i2ibench.metrics.record import build_record
from i2ibench.metrics.suite import DistributionSettings, setting_problem

log = logging.getLogger(__name__)
TASK = "images"
RESIZE_FILTER = 3  # PIL.Image.BICUBIC: images not at their folder's size are resized with it
MAX_NAMED = 10  # sub-folders named in a message; the rest are counted


class FolderImages(Dataset):
    """Images of one folder at one size (width, height), each with its same-named reference images.

    Items: {`image` in [-1, 1], `index`, and one entry per reference role (`source`, `gt`)}.
    """

    def __init__(self, paths: list[Path], size: tuple[int, int],
                 references: dict[str, list[Path]] | None = None) -> None:
        self.paths, self.size, self.references = paths, size, references or {}

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, path: Path):
        image = load_rgb(path)
        if image.size != self.size:
            image = image.resize(self.size, resample=RESIZE_FILTER)
        return to_model_range(image)

    def __getitem__(self, index: int) -> dict:
        item = {"image": self._load(self.paths[index]), "index": index}
        for role, paths in self.references.items():
            item[role] = self._load(paths[index])
        return item


T = TypeVar("T")


def prefetched(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """`items`, produced by a background thread up to `depth` ahead of the consumer.

    The next batch is decoded (PIL releases the GIL while it decodes) while the Inception forward
    runs on the current one, without the start-up cost and memory of a loader worker process.
    An exception in the producer is raised in the consumer, at the item where it happened.
    """
    done = object()
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slots.put(item)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
            slots.put(err)
            return
        slots.put(done)

    worker = threading.Thread(target=produce, name="i2ibench-decode", daemon=True)
    worker.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


def loader(dataset: Dataset, batch_size: int, num_workers: int) -> Iterable[dict]:
    """Batches of `dataset`; decoded one batch ahead in a thread when there are no worker processes."""
    batches = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    return batches if num_workers > 0 else prefetched(batches)


def sub_folders(folder: Path) -> list[Path]:
    """The visible sub-folders of `folder`, which `i2ibench eval` does not search."""
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and not is_hidden(p))


def named(paths: list[Path]) -> str:
    names = ", ".join(p.name for p in paths[:MAX_NAMED])
    return names + (f" and {len(paths) - MAX_NAMED} more" if len(paths) > MAX_NAMED else "")


def scan_folder(folder: Path, role: str, size: tuple[int, int] | None = None) -> tuple[list[Path], tuple[int, int]]:
    """The folder's images, checked; their common size (the most frequent one when they differ).

    Sub-folders are not searched (`list_images` warns; a folder with nothing else is an error that
    names them); images of another size are counted and resized.
    """
    folder = Path(folder)
    subs = sub_folders(folder) if folder.is_dir() else []
    try:
        paths = list_images(folder)
    except DataError as err:
        if subs and "no images" in str(err):
            raise DataError(f"{folder}: {role} has no images of its own, only {len(subs)} sub-folder(s) "
                            f"({named(subs)}), which are not searched; point {role} at the folder that "
                            "holds the images.") from err
        raise
    # Sub-folders next to images are reported by `list_images` itself (one warning for every command).
    if len(paths) < 2:
        raise DataError(f"{folder}: {role} needs at least 2 images, found {len(paths)}.")
    check = check_images(paths, desc=f"checking {folder}")
    raise_for_bad(check.bad)
    if report := check.report_conversions(str(folder)):
        log.warning(report)
    sizes = Counter(check.sizes.values())
    target = size or sizes.most_common(1)[0][0]
    others = {s: n for s, n in sizes.items() if s != target}
    if others:
        why = f"the size of --fake, which {role} must match" if size else "the folder's most common size"
        listed = ", ".join(f"{n} at {w}x{h}" for (w, h), n in sorted(others.items(), key=lambda kv: -kv[1])[:5])
        log.warning(f"{folder}: {sum(others.values())} of {len(paths)} images resized to {target[0]}x{target[1]} "
                    f"({why}) with PIL bicubic: {listed}.")
    return paths, target


def matched_paths(fake: list[Path], folder: Path, role: str) -> list[Path]:
    """`folder`'s images in the order of `fake`, matched by file stem; an error lists any mismatch."""
    by_stem = {p.stem: p for p in list_images(folder)}
    missing = [p.name for p in fake if p.stem not in by_stem]
    extra = sorted(set(by_stem) - {p.stem for p in fake})
    if missing or extra:
        raise DataError(f"{folder}: {role} images must have the same names as --fake; missing for "
                        f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, no fake for {extra[:5]}"
                        f"{' ...' if len(extra) > 5 else ''}.")
    return [by_stem[p.stem] for p in fake]


def evaluate_folders(real: Path, fake: Path, source: Path | None = None, gt: Path | None = None,
                     settings: DistributionSettings | None = None, weights: str | None = None, lpips: str = "alex",
                     batch_size: int = 32, device: str = "cpu", num_workers: int = 0) -> dict:
    """Every metric of the suite for `fake` against `real` (and content metrics against source / gt)."""
    real_paths, real_size = scan_folder(Path(real), "--real")
    fake_paths, fake_size = scan_folder(Path(fake), "--fake")
    references: dict[str, list[Path]] = {}
    for role, folder in (("source", source), ("gt", gt)):
        if folder is not None:
            references[role] = matched_paths(fake_paths, Path(folder), f"--{role}")
            scan_folder(Path(folder), f"--{role}", size=fake_size)

    evaluator = Evaluator(weights, settings, lpips, device)
    evaluator.begin({TASK: tuple(references)}, {TASK: len(fake_paths)})
    fakes = FolderImages(fake_paths, fake_size, references)
    for batch in loader(fakes, batch_size, num_workers):
        evaluator.update(TASK, batch["index"], batch["image"], **{role: batch[role] for role in references})
    real_features, cached = evaluator.real_features(
        real_paths, None, lambda: loader(FolderImages(real_paths, real_size), batch_size, num_workers))
    metrics, unavailable = evaluator.finish({TASK: real_features})
    return build_record(
        dataset={"name": "folders", "real": str(real), "fake": str(fake),
                 "source": str(source) if source else None, "gt": str(gt) if gt else None},
        method="external", config={"batch_size": batch_size}, seed=None, step=None, epoch=None,
        checkpoint={"selection": "none", "path": None},
        protocol={**evaluator.card(None), "image_size": {"real": list(real_size), "fake": list(fake_size)}},
        metrics=metrics, unavailable=unavailable,
        timings={**evaluator.timings, "real_features_cached": cached})


def format_table(record: dict) -> str:
    """A readable two-column table of one record's metrics, then the reasons for missing ones."""
    lines = []
    for task, values in record["metrics"].items():
        lines.append(f"{'metric':<22}{task}")
        for name, value in values.items():
            if name in ("intervals", "bootstrap_replicates"):  # shown beside each value / kept in the JSON
                continue
            shown = "unavailable" if value is None else (f"{value:.6g}" if isinstance(value, float) else str(value))
            if interval := values.get("intervals", {}).get(name):
                shown += f"  [{interval[0]:.6g}, {interval[1]:.6g}]"
            lines.append(f"{name:<22}{shown}")
        for name, reason in record["unavailable"].get(task, {}).items():
            lines.append(f"  {name}: {reason}")
    return "\n".join(lines)


def setting_type(name: str):
    """An argparse type for one metric setting: an integer in the range DistributionSettings accepts,
    so that a bad value is argparse's one-line error naming the option (exit status 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if problem := setting_problem(name, value):
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def positive_int(text: str) -> int:
    if not text.lstrip("-").isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return int(text)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="i2ibench eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, required=True, help="folder of real target-domain images")
    parser.add_argument("--fake", type=Path, required=True, help="folder of translated images")
    parser.add_argument("--source", type=Path, help="source images, same names as --fake (content preservation)")
    parser.add_argument("--gt", type=Path, help="ground-truth images, same names as --fake (paired test sets)")
    parser.add_argument("--kid-subset-size", type=setting_type("kid_subset_size"), default=None,
                        help="images per KID subset, >= 2 (default: min(1000, N_real, N_fake))")
    parser.add_argument("--kid-subsets", type=setting_type("kid_subsets"), default=100, help=">= 1 (default: 100)")
    parser.add_argument("--is-splits", type=setting_type("is_splits"), default=10, help=">= 1 (default: 10)")
    parser.add_argument("--seed", type=setting_type("seed"), default=TORCH_FIDELITY_SEED,
                        help="seed of KID subsets, IS splits and MMD bandwidth (default: torch-fidelity's 2020)")
    parser.add_argument("--weights", help="Inception weights file (default: $I2IBENCH_INCEPTION_WEIGHTS or download)")
    parser.add_argument("--lpips", default="alex", choices=LPIPS_CHOICES)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="write the JSON record here")
    args = parser.parse_args(argv)
    settings = DistributionSettings(args.kid_subset_size, args.kid_subsets, args.is_splits, seed=args.seed)
    try:
        record = evaluate_folders(args.real, args.fake, args.source, args.gt, settings, args.weights, args.lpips,
                                  args.batch_size, args.device)
    except (DataError, ValueError) as err:
        parser.exit(2, f"i2ibench eval: error: {err}\n")
    print(format_table(record))
    if args.out:
        files.write_json(args.out, record)
        print(f"record written to {args.out}")
    return 0
