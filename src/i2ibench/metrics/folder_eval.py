"""`i2ibench eval`: the suite's protocol on image folders made by any tool."""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from i2ibench import files
from i2ibench.data.images import DataError, check_images, list_images, load_rgb, raise_for_bad
from i2ibench.data.transforms import to_model_range
from i2ibench.metrics.evaluator import LPIPS_CHOICES, Evaluator
from i2ibench.metrics.record import build_record
from i2ibench.metrics.suite import DistributionSettings

log = logging.getLogger(__name__)
TASK = "images"


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
            image = image.resize(self.size, resample=3)  # 3: bicubic
        return to_model_range(image)

    def __getitem__(self, index: int) -> dict:
        item = {"image": self._load(self.paths[index]), "index": index}
        for role, paths in self.references.items():
            item[role] = self._load(paths[index])
        return item


def scan_folder(folder: Path, role: str, size: tuple[int, int] | None = None) -> tuple[list[Path], tuple[int, int]]:
    """The folder's images, checked; their common size (the most frequent one when they differ, said once)."""
    paths = list_images(folder)
    if len(paths) < 2:
        raise DataError(f"{folder}: {role} needs at least 2 images, found {len(paths)}.")
    check = check_images(paths, desc=f"checking {folder}")
    raise_for_bad(check.bad)
    if report := check.report_conversions(str(folder)):
        log.warning(report)
    sizes = Counter(check.sizes.values())
    target = size or sizes.most_common(1)[0][0]
    mismatched = sum(n for s, n in sizes.items() if s != target)
    if mismatched:
        why = "to match --fake" if size else "the folder's most common size"
        log.warning(f"{folder}: resizing {mismatched} of {len(paths)} images to {target[0]}x{target[1]} ({why}).")
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
    for batch in DataLoader(fakes, batch_size=batch_size, num_workers=num_workers):
        evaluator.update(TASK, batch["index"], batch["image"], **{role: batch[role] for role in references})
    real_features, cached = evaluator.real_features(
        real_paths, None, lambda: DataLoader(FolderImages(real_paths, real_size), batch_size=batch_size,
                                             num_workers=num_workers))
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
            shown = "unavailable" if value is None else (f"{value:.6g}" if isinstance(value, float) else str(value))
            lines.append(f"{name:<22}{shown}")
        for name, reason in record["unavailable"].get(task, {}).items():
            lines.append(f"  {name}: {reason}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="i2ibench eval", description=__doc__)
    parser.add_argument("--real", type=Path, required=True, help="folder of real target-domain images")
    parser.add_argument("--fake", type=Path, required=True, help="folder of translated images")
    parser.add_argument("--source", type=Path, help="source images, same names as --fake (content preservation)")
    parser.add_argument("--gt", type=Path, help="ground-truth images, same names as --fake (paired test sets)")
    parser.add_argument("--kid-subset-size", type=int, default=None, help="default: min(1000, N_real, N_fake)")
    parser.add_argument("--kid-subsets", type=int, default=100)
    parser.add_argument("--is-splits", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="seed of KID subsets, IS splits and MMD bandwidth")
    parser.add_argument("--weights", help="Inception weights file (default: $I2IBENCH_INCEPTION_WEIGHTS or download)")
    parser.add_argument("--lpips", default="alex", choices=LPIPS_CHOICES)
    parser.add_argument("--batch-size", type=int, default=32)
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
