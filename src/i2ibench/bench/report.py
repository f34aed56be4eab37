"""Result tables from evaluation records (and nothing else): Markdown, CSV, JSON, samples, plots.

Reference rows (`copy-input`, `real-target`; see `bench.reference_rows`) are records like the
others, with checkpoint selection `reference`: they appear in every task table of every
checkpoint selection, in italics and tagged "(reference)", and are never bold: the best value
of a column is chosen among the methods only. Their card is checked like a method's (†).

Every cell carries its uncertainty: mean ± std over seeds (2+ seeds) and the bootstrap interval
over test images that the records carry (`metrics.bootstrap`; the seeds' mean interval when
several); bold and tie marks follow `bench.uncertainty.rank_marks`. Distribution metrics sit
beside N (the images evaluated); when N < 2048, KID (unbiased at any N) is the headline column
before FID (rank-deficient there, ‡). Every table states its checkpoint selection
(`SELECTION_RULES`); `best-on-test` is derived from in-training test evaluations only on request.

Failed runs (`failed`: row name -> {seed: reason}, from the runner) show no numbers: their
reason is listed above the tables, and a row with any failed seed reads "failed" in every cell,
because a mean over only the seeds that survived would favour the unstable. Their records (from
the seeds that finished) stay in results.csv and results.json.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from i2ibench import files
from i2ibench.bench import uncertainty as U

# (record key, column title, which is better: "lower", "higher" or "half" (closest to 0.5), display scale)
COLUMNS = [
    ("fid", "FID", "lower", 1), ("kid_mean", "KID×10³", "lower", 1e3), ("is_mean", "IS", "higher", 1),
    ("kernel_mmd2", "MMD²×10³", "lower", 1e3), ("mmd_xu", "MMD(Xu)", "lower", 1), ("wasserstein", "Wass.", "lower", 1),
    ("nn1_accuracy", "1-NN acc.", "half", 1),
    ("precision", "Prec.", "higher", 1), ("recall", "Rec.", "higher", 1),
    ("ssim_gt", "SSIM(gt)", "higher", 1), ("psnr_gt", "PSNR(gt)", "higher", 1), ("lpips_gt", "LPIPS(gt)", "lower", 1),
    ("ssim_source", "SSIM(src)", "higher", 1), ("psnr_source", "PSNR(src)", "higher", 1),
    ("lpips_source", "LPIPS(src)", "lower", 1),
    ("ssim_background", "SSIM(bg)", "higher", 1), ("psnr_background", "PSNR(bg)", "higher", 1),
    ("lpips_background", "LPIPS(bg)", "lower", 1), ("lpips_diversity", "LPIPS div.", "higher", 1),
]
SELECTIONS = ("last", "best-on-validation", "best-on-test")
BEST_ON_TEST = "best-on-test"
# What each checkpoint selection means, stated under every table.
SELECTION_RULES = {
    "last": "`last`: the weights at the end of training; no selection (the default).",
    "best-on-validation": "`best-on-validation`: the checkpoint with the lowest mean validation FID over the "
                          "tasks (val/fid_mean) among those evaluated during training; the test split took no "
                          "part in choosing it.",
    BEST_ON_TEST: "`best-on-test` ⚠ OPTIMISTIC: per run, the in-training evaluation with the lowest mean TEST FID "
                  "over the tasks; the test set chose the checkpoint, so its numbers are biased in the method's "
                  "favour. The convention of the CUT (Park et al. 2020) and UNSB (Kim et al. 2023) papers: compare "
                  "these numbers only with numbers selected the same way. Shown only on request.",
}
FID_FULL_RANK = 2048  # as metrics.distribution: below it FID is rank-deficient, and KID is the headline
IN_TRAINING = "in-training"
NON_SCALAR = ("intervals", "bootstrap_replicates")  # per-task record entries that are not one number
REFERENCE = "reference"  # the checkpoint selection of reference rows (and their key in the summary)
ARROW = {"lower": "↓", "higher": "↑", "half": "→0.5"}  # 1-NN two-sample accuracy is ideal at 0.5
CARD_NOTES = ("lpips",)  # card entries that only describe availability, not the protocol of a number


def load_records(run_roots: Iterable[Path]) -> list[dict]:
    records = []
    for root in run_roots:
        for path in sorted((Path(root) / "eval").glob("*.json")):
            record = json.loads(path.read_text())
            record["_file"] = str(path)
            records.append(record)
    return records


def as_number(value: Any) -> float | None:
    if isinstance(value, str):  # "inf" / "nan" as written by files.write_json
        value = float(value)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def is_reference(record: dict) -> bool:
    return record["checkpoint"]["selection"] == REFERENCE


def reference_labels(records: list[dict]) -> list[dict]:
    """Reference records named for their table row: the kind, plus the image size (or a number) when
    the bench evaluated under several protocol cards (e.g. each method at its paper's size)."""
    records = [r for r in records if is_reference(r)]
    cards: dict[str, list[str]] = defaultdict(list)
    for record in records:
        if card_key(record) not in cards[record["method"]]:
            cards[record["method"]].append(card_key(record))
    labelled = []
    for record in records:
        keys = cards[record["method"]]
        label = record["method"]
        if len(keys) > 1:
            sizes = [json.loads(k).get("image_size") for k in keys]
            size = record["protocol"].get("image_size")
            label += f" [{size} px]" if sizes.count(size) == 1 else f" [card {keys.index(card_key(record)) + 1}]"
        labelled.append({**record, "method": label})
    return labelled


def summarize(records: list[dict], exclude: Iterable[str] = (), selections: Iterable[str] = SELECTIONS) -> dict:
    """{selection: {task: {method: {metric: {mean, std, n}}}}} over seeds, from test records.

    Methods in `exclude` (those with a failed run) get no summary: no mean over survivors.
    """
    exclude, selections = set(exclude), tuple(selections)
    values: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    intervals: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for record in records:
        selection = record["checkpoint"]["selection"]
        if selection not in selections or record["method"] in exclude:
            continue
        for task, metrics in record["metrics"].items():
            for name, value in metrics.items():
                if (number := as_number(value)) is not None:
                    values[selection][task][record["method"]][name].append(number)
            for name, interval in (metrics.get("intervals") or {}).items():
                if interval is not None:
                    intervals[selection][task][record["method"]][name].append([as_number(v) for v in interval])
    summary: dict = {}
    for selection, tasks in values.items():
        for task, methods in tasks.items():
            for method, metrics in methods.items():
                for name, numbers in metrics.items():
                    finite = [n for n in numbers if math.isfinite(n)]
                    mean = statistics.fmean(numbers) if len(finite) == len(numbers) else float("inf")
                    std = statistics.stdev(numbers) if len(numbers) > 1 and len(finite) == len(numbers) else None
                    summary.setdefault(selection, {}).setdefault(task, {}).setdefault(method, {})[name] = {
                        "mean": mean, "std": std, "n": len(numbers),
                        "ci": mean_interval(intervals[selection][task][method][name], len(numbers))}
    return summary


def mean_interval(intervals: list[list[float]], records: int) -> list[float] | None:
    """The seeds' mean bootstrap interval, when every record of the cell has one (else None)."""
    if not intervals or len(intervals) != records:
        return None
    if any(v is None for interval in intervals for v in interval):
        return None
    return [statistics.fmean(interval[side] for interval in intervals) for side in (0, 1)]


def card_key(record: dict) -> str:
    return json.dumps({k: v for k, v in record["protocol"].items() if k not in CARD_NOTES}, sort_keys=True)


def protocol_cards(records: list[dict]) -> dict[str, dict]:
    """The protocol card of each method's test records (the first one seen)."""
    cards = {}
    for record in records:
        if record["checkpoint"]["selection"] in SELECTIONS:
            cards.setdefault(record["method"], record["protocol"])
    return cards


def number_text(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1000 or not math.isfinite(value) else f"{value:.0f}"


def format_cell(stats: dict | None, scale: float) -> str:
    """`mean`, then `± std` (2+ seeds), then `[lo, hi]` (the bootstrap interval) when known."""
    if stats is None:
        return "n/a"
    text = number_text(stats["mean"] * scale)
    if stats.get("std") is not None:
        text += f" ± {stats['std'] * scale:.2g}"
    if stats.get("ci"):
        low, high = (as_number(v) for v in stats["ci"])
        if low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
            text += f" [{number_text(low * scale)}, {number_text(high * scale)}]"
    return text


def best_methods(methods: dict, key: str, direction: str) -> set[str]:
    """The methods with the best value of `key` (ignoring uncertainty; see `uncertainty.rank_marks`)."""
    # inf is a real value (PSNR of an untouched background) and can be the best; nan never is.
    means = {m: v[key]["mean"] for m, v in methods.items() if key in v and not math.isnan(v[key]["mean"])}
    if not means:
        return set()
    if direction == "half":  # closest to 0.5 is best
        means = {m: abs(mean - 0.5) for m, mean in means.items()}
        direction = "lower"
    target = min(means.values()) if direction == "lower" else max(means.values())
    return {m for m, mean in means.items() if mean == target}


def markdown(dataset: str, protocol: str, records: list[dict], summary: dict, skipped: dict[str, str],
             failed: dict[str, dict[int, str]], reference_failure: str | None = None,
             times: list[dict] = ()) -> str:
    tests = [r for r in records if r["checkpoint"]["selection"] in SELECTIONS]
    references = [r for r in records if is_reference(r)]
    cards = {**protocol_cards(tests), **{r["method"]: r["protocol"] for r in references}}
    # The common card is the methods' most frequent one; reference rows follow it, they do not set it.
    counted = [card_key(r) for r in (tests or references)]
    majority = max(set(counted), key=counted.count, default=None)
    differs = {m for m, card in cards.items() if card_key({"protocol": card}) != majority}
    seeds = sorted({r["seed"] for r in records if r["seed"] is not None})
    lines = [f"# {dataset} — {protocol} protocol", "", legend(seeds, json.loads(majority) if majority else {}), ""]
    if references or reference_failure:
        lines += ["Rows in *italics* tagged (reference) are not methods and are never ranked: *copy-input* scores "
                  "the source images as their own translations (the number a method must beat), *real-target* "
                  "scores held-out real target-domain images (the best score reachable at that N); see "
                  "\"Reference rows\" below.", ""]
    if failed:
        lines += ["## Failed runs", "",
                  "These runs stopped before their test evaluation; they have no numbers in the tables below "
                  "(a method with any failed seed reads \"failed\").", "",
                  "| method | seed | reason |", "|---|---|---|"]
        lines += [f"| {m} | {seed} | failed: {cell_text(reason)} |"
                  for m, by_seed in sorted(failed.items()) for seed, reason in sorted(by_seed.items())]
        lines.append("")
    tested = defaultdict(set)  # (selection, task) -> methods with a record, failed ones included
    for record in records:
        for task in record["metrics"]:
            tested[(record["checkpoint"]["selection"], task)].add(record["method"])
    unavailable = unavailable_reasons(tests)
    reference_rows = summary.get(REFERENCE, {})
    rank_deficient = False
    for selection in SELECTIONS:
        for task, methods in sorted(summary.get(selection, {}).items()):
            references_here = reference_rows.get(task, {})
            columns = [c for c in COLUMNS if any(c[0] in v for v in methods.values())
                       or c[0] in unavailable or c[0].removesuffix("_mean") in unavailable]  # IS: n/a, said why
            smallest = smallest_set({**methods, **references_here})
            columns = headline_order(columns, smallest)
            deficient = smallest is not None and smallest < FID_FULL_RANK
            rank_deficient |= deficient
            titles = ["N"] + [f"{title}{'‡' if key == 'fid' and deficient else ''} {ARROW[d]}"
                              for key, title, d, _ in columns]
            lines += [f"## {task} — {selection} checkpoint", "", f"Checkpoint selection: {SELECTION_RULES[selection]}",
                      "", "| method | " + " | ".join(titles) + " |", "|---|" + "---|" * len(titles)]
            marks = {key: U.rank_marks(methods, key, d) for key, _, d, _ in columns}  # methods only
            failed_here = tested[(selection, task)] & set(failed)  # `methods` (the summary) holds no failed one
            for method in sorted(set(methods) | failed_here):
                if method in failed_here:
                    lines.append(f"| {method} | " + " | ".join(["failed"] * len(titles)) + " |")
                    continue
                cells = [sample_size(methods[method])]
                for key, _, _, scale in columns:
                    cells.append(marked(format_cell(methods[method].get(key), scale), marks[key].get(method)))
                mark = " †" if method in differs else ""
                lines.append(f"| {method}{mark} | " + " | ".join(cells) + " |")
            for label, values in sorted(references_here.items()):
                cells = [f"*{sample_size(values)}*"] + [f"*{format_cell(values.get(key), scale)}*"
                                                        for key, _, _, scale in columns]
                mark = " †" if label in differs else ""
                lines.append(f"| *{label}* (reference){mark} | " + " | ".join(cells) + " |")
            lines.append("")
            if absent := absent_methods(summary.get(selection, {}), task):
                lines += ["Not judged on this task: " + "; ".join(absent) + ".", ""]
    if rank_deficient:
        lines += [f"‡ Fewer than {FID_FULL_RANK} images in a set: FID's covariance is rank-deficient and FID is biased "
                  "upward by an amount that depends on N; compare it only at equal N. KID (unbiased at any N) is "
                  "then the headline column, before FID.", ""]
    if skipped:
        lines += ["## Not run", "", "| method | reason |", "|---|---|"]
        lines += [f"| {m} | not applicable: {cell_text(r)} |" for m, r in sorted(skipped.items())]
        lines.append("")
    if unavailable:
        lines += ["## Unavailable metrics", ""]
        lines += [f"- **{name}**: {reason}" for name, reason in sorted(unavailable.items())]
        lines.append("")
    if references or reference_failure:
        lines += reference_section(references, reference_failure, set(unavailable.values()))
    lines += time_section(list(times))
    lines += ["## Protocol card", ""]
    if majority:
        lines += [f"- {k}: {v}" for k, v in json.loads(majority).items()]
    for method in sorted(differs):
        diff = {k: v for k, v in cards[method].items() if json.loads(majority or "{}").get(k) != v and k not in CARD_NOTES}
        lines.append(f"- † {method} differs: {json.dumps(diff)}")
    return "\n".join(lines) + "\n"


def legend(seeds: list, card: dict) -> str:
    """The paragraph under a results title: what a cell holds, what bold and ≈ mean."""
    resamples, level = card.get("bootstrap_resamples"), card.get("bootstrap_level")
    interval = (f"the {level:.0%} bootstrap interval over the test images ({resamples} resamples of the "
                "translated images, the real set fixed; see the protocol card)" if resamples and level else
                "the bootstrap interval over the test images, where the records carry one")
    return (f"Each cell: the value (mean ± std over seeds {seeds} when 2+ seeds), then [lo, hi], {interval}; "
            "with 2+ seeds, the seeds' mean interval. ↓ lower is better, ↑ higher is better, →0.5 closest to 0.5 "
            "is best. **Bold**: the best of its column among the methods, beyond the uncertainty of every other "
            "method: its interval (the bootstrap interval, mean ± std, or the hull of both) overlaps none of "
            f"theirs. {U.TIE}: no such winner; the best value and every method whose interval overlaps it are "
            "tied. A column where a method's uncertainty is unknown (one seed and no bootstrap interval) is not "
            "ranked. N: translations evaluated (/ real images, when different), for every distribution metric. "
            "Test split; rows marked † were measured under a different protocol card (see below) and are not "
            "comparable with the others.")


def column_key(header: str) -> str | None:
    """The record key of a Markdown table header cell (`FID‡ ↓` -> `fid`, `N` -> `n_fake`), or None:
    for readers of results.md (the HTML report), whose headers carry marks that may change."""
    if header.strip() == "N":
        return "n_fake"
    title = header.replace("‡", "").strip()
    for key, name, direction, _ in COLUMNS:
        if title in (f"{name} {ARROW[direction]}", name):
            return key
    return None


def marked(cell: str, mark: str | None) -> str:
    return f"**{cell}**" if mark == "best" else f"{U.TIE}{cell}" if mark == "tie" else cell


def smallest_set(rows: dict) -> int | None:
    """The smallest real or fake set among a table's rows (None when no row says)."""
    sizes = [int(v[key]["mean"]) for v in rows.values() for key in ("n_real", "n_fake")
             if key in v and as_number(v[key]["mean"]) is not None]
    return min(sizes) if sizes else None


def headline_order(columns: list[tuple], smallest: int | None) -> list[tuple]:
    """KID before FID when a set is smaller than FID_FULL_RANK (FID rank-deficient there)."""
    keys = [c[0] for c in columns]
    if smallest is None or smallest >= FID_FULL_RANK or "fid" not in keys or "kid_mean" not in keys:
        return columns
    kid = columns[keys.index("kid_mean")]
    rest = [c for c in columns if c[0] != "kid_mean"]
    at = [c[0] for c in rest].index("fid")
    return rest[:at] + [kid] + rest[at:]


def sample_size(values: dict) -> str:
    """`n_fake`, or `n_fake / n_real` when they differ; `?` when the record does not say."""
    n_fake, n_real = (as_number(values.get(key, {}).get("mean")) for key in ("n_fake", "n_real"))
    if n_fake is None:
        return "?"
    return f"{n_fake:.0f}" if n_real is None or n_real == n_fake else f"{n_fake:.0f} / {n_real:.0f}"


def absent_methods(tasks: dict, task: str) -> list[str]:
    """Methods of this selection with no row in `task`'s table though judged on tasks of its kind
    (two-domain, or multi-domain), each with what it is judged on: a one-direction method (CUT), or
    a guidance mode it has not (StarGAN: no @latent / @reference)."""
    from i2ibench.data.tasks import parse_task

    here, multi = set(tasks.get(task, {})), parse_task(task).mode is not None
    judged: dict[str, set[str]] = defaultdict(set)
    for name, methods in tasks.items():
        if (parse_task(name).mode is not None) == multi:
            for method in methods:
                judged[method].add(name)
    lines = []
    for method in sorted(set(judged) - here):
        modes = {parse_task(name).mode for name in judged[method]}
        if modes == {"label"}:
            lines.append(f"{method} (guided by the target label alone: its rows are in the `src->dst` tables, "
                         "it has no latent or reference guidance)")
        elif modes <= {"latent", "reference"}:
            lines.append(f"{method} (guided by random latents or reference images: its rows are in the "
                         f"{' / '.join(f'`@{m}`' for m in sorted(modes))} tables)")
        else:
            lines.append(f"{method} (judged on {', '.join(f'`{name}`' for name in sorted(judged[method]))})")
    return lines


def reference_section(references: list[dict], failure: str | None, said: set[str] = frozenset()) -> list[str]:
    """What each reference row is, which images it scored per task, and why some of its metrics are
    missing (reasons already given for the methods, in `said`, are not repeated)."""
    lines = ["## Reference rows", ""]
    if failure:
        lines += [f"- the reference rows could not be computed: {cell_text(failure)}"]
    for record in sorted(references, key=lambda r: r["method"]):
        info = record.get("reference", {})
        lines.append(f"- *{record['method']}*: {info.get('what', '')}")
        for task, note in sorted(info.get("tasks", {}).items()):
            if task in record["metrics"] or "reason" in note:
                text = note.get("reason") or ", ".join(f"{k} {v}" for k, v in note.items())
                lines.append(f"  - {task}: {cell_text(text)}")
        reasons = {}
        for task_reasons in record.get("unavailable", {}).values():
            for name, reason in task_reasons.items():
                if reason not in said:
                    reasons.setdefault(reason, []).append(name)
        for reason, names in reasons.items():
            lines.append(f"  - unavailable ({', '.join(sorted(set(names)))}): {cell_text(reason)}")
    return lines + [""]


def cell_text(text: str) -> str:
    """One Markdown table cell: a single line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def unavailable_reasons(records: list[dict]) -> dict[str, str]:
    reasons = {}
    for record in records:
        for task_reasons in record.get("unavailable", {}).values():
            for name, reason in task_reasons.items():
                reasons.setdefault(name, reason)
    return reasons


def csv_text(records: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["dataset", "method", "seed", "split", "selection", "epoch", "step", "task", "metric", "value"])
    for r in records:
        for task, metrics in r["metrics"].items():
            row = [r["dataset"]["name"], r["method"], r["seed"], r["dataset"]["split"], r["checkpoint"]["selection"],
                   r["epoch"], r["step"], task]
            for name, value in metrics.items():
                if name not in NON_SCALAR:
                    writer.writerow(row + [name, value])
            for name, interval in (metrics.get("intervals") or {}).items():  # bootstrap interval ends
                if interval is not None:
                    writer.writerow(row + [f"{name}_ci_low", interval[0]])
                    writer.writerow(row + [f"{name}_ci_high", interval[1]])
    return out.getvalue()


def write_samples(out: Path, run_roots: list[Path]) -> Path | None:
    """samples.png: per task, the test inputs, then each method's translations of them (first seed)."""
    from PIL import Image, ImageDraw

    rows: list[tuple[str, Image.Image]] = []
    first_seed = {}
    for root in run_roots:
        first_seed.setdefault(root.parent.name, root)
    tasks = sorted({p.name.split(".")[0] for root in first_seed.values() for p in (root / "test_samples").glob("*.png")})
    for task in tasks:
        inputs = next((root / "test_samples" / f"{task}.inputs.png" for root in first_seed.values()
                       if (root / "test_samples" / f"{task}.inputs.png").is_file()), None)
        if inputs is None:
            continue
        rows.append((f"{task}: input", Image.open(inputs).convert("RGB")))
        for method, root in sorted(first_seed.items()):
            path = root / "test_samples" / f"{task}.outputs.png"
            if path.is_file():
                rows.append((method, Image.open(path).convert("RGB")))
    if not rows:
        return None
    label_width = 150
    width = label_width + max(image.width for _, image in rows)
    canvas = Image.new("RGB", (width, sum(image.height + 2 for _, image in rows)), "white")
    draw, y = ImageDraw.Draw(canvas), 0
    for label, image in rows:
        canvas.paste(image, (label_width, y))
        draw.text((4, y + image.height // 2 - 6), label[:24], fill="black")
        y += image.height + 2
    path = out / "samples.png"
    files.save_image(path, canvas)
    return path


def write_plots(out: Path, records: list[dict]) -> list[Path]:
    """One plot per metric of the in-training evaluations: a line per method and task (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in records:
        if r["checkpoint"]["selection"] != "in-training":
            continue
        for task, metrics in r["metrics"].items():
            for key, *_ in COLUMNS:
                if (value := as_number(metrics.get(key))) is not None and math.isfinite(value):
                    curves[key][(r["method"], task)][r["epoch"]].append(value)
    paths = []
    for key, title, direction, _ in COLUMNS:
        if key not in curves:
            continue
        figure, axis = plt.subplots(figsize=(6, 4))
        for (method, task), points in sorted(curves[key].items()):
            epochs = sorted(points)
            axis.plot([e + 1 for e in epochs], [statistics.fmean(points[e]) for e in epochs], marker="o",
                      label=f"{method} {task}")
        axis.set_xlabel("epoch")
        axis.set_ylabel(f"{title} ({direction} is better)")
        axis.legend(fontsize=7)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        path = out / "plots" / f"{key}.png"
        with files.atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


WALL_TIME = "wall-time.json"  # in each run's folder: the seconds of every attempt the bench made


def record_wall_time(root: Path, label: str, seed: int, seconds: float) -> None:
    """Add one attempt's wall time to a run's record (a resumed run keeps its earlier attempts)."""
    path = root / WALL_TIME
    try:
        attempts = json.loads(path.read_text())["attempts_s"]
    except (OSError, ValueError, KeyError):
        attempts = []
    files.write_json(path, {"run": label, "seed": seed, "attempts_s": [*attempts, round(seconds, 1)],
                            "cpu_count": os.cpu_count(), "cuda": cuda_name()})


def cuda_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def wall_times(run_roots: Iterable[Path]) -> list[dict]:
    """The runs' wall-time records, in run order (runs that the bench did not time are left out)."""
    times = []
    for root in run_roots:
        try:
            times.append(json.loads((Path(root) / WALL_TIME).read_text()))
        except (OSError, ValueError):
            continue
    return times


def duration_text(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s"


def time_section(times: list[dict]) -> list[str]:
    """Each run's wall time and their sum, as the bench measured them (training and every evaluation)."""
    if not times:
        return []
    machines = sorted({(t.get("cuda") or f"{t.get('cpu_count')} CPU cores") for t in times})
    lines = ["## Time", "", f"Wall time of each run as the bench measured it on {', '.join(machines)}: training, "
             "in-training and final evaluation, summed over the attempts that ended under the bench (a resumed run's "
             "earlier attempt included; a bench that was itself killed cannot time its run). The reference rows are "
             "computed once per dataset and protocol and are not counted here.", "",
             "| wall time | run | seed |", "|---|---|---|"]  # time first: no row here reads like a method's row
    lines += [f"| {duration_text(sum(t['attempts_s']))} | {t['run']} | {t['seed']} |" for t in times]
    lines += [f"| **{duration_text(sum(sum(t['attempts_s']) for t in times))}** | **all runs** | |", ""]
    return lines


def write_results(out: Path, run_roots: list[Path], skipped: dict[str, str],
                  failed: dict[str, dict[int, str]], reference_roots: Iterable[Path] = (),
                  reference_failure: str | None = None, *, best_on_test: bool = False) -> None:
    """results.md / .csv / .json, samples.png and plots/ from the runs' records and the reference rows'.

    `best_on_test`: add the optimistic `best-on-test` tables (`best_on_test_records`); off by default.
    """
    references = reference_labels(load_records(reference_roots))
    records = load_records(run_roots)
    if best_on_test:
        records += best_on_test_records(records)
    records += references
    tests = [r for r in records if r["checkpoint"]["selection"] in SELECTIONS]
    dataset = (tests or references)[0]["dataset"]["name"] if (tests or references) else out.parent.name
    summary = summarize(records, exclude=failed)
    if references:
        summary.update(summarize(references, selections=(REFERENCE,)))
    files.write_text(out / "results.md", markdown(dataset, out.name, records, summary, skipped, failed,
                                                  reference_failure, wall_times(run_roots)))
    files.write_text(out / "results.csv", csv_text(records))
    files.write_json(out / "results.json", {"dataset": dataset, "protocol": out.name, "skipped": skipped,
                                            "failed": {m: {str(seed): reason for seed, reason in by_seed.items()}
                                                       for m, by_seed in failed.items()},
                                            "reference_failure": reference_failure,
                                            "summary": summary,
                                            "records": [stored(r) for r in records]})
    write_samples(out, run_roots)
    write_plots(out, records)
    from i2ibench.bench.html_report import write_html_report  # here: html_report imports this module

    write_html_report(out)


def stored(record: dict) -> dict:
    """A record as results.json keeps it: bootstrap replicates (for `compare`) only in test records."""
    record = {k: v for k, v in record.items() if k != "_file"}
    if record["checkpoint"]["selection"] in SELECTIONS:
        return record
    metrics = {task: {k: v for k, v in values.items() if k != "bootstrap_replicates"}
               for task, values in record["metrics"].items()}
    return {**record, "metrics": metrics}


def best_on_test_records(records: list[dict]) -> list[dict]:
    """Per run, a copy of its in-training TEST evaluation with the lowest mean FID over tasks, labelled
    `best-on-test` (optimistic: see SELECTION_RULES). Runs evaluated on a val split in training have none."""
    by_run: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        if record["checkpoint"]["selection"] == IN_TRAINING and record["dataset"].get("split") == "test":
            run = str(Path(record.get("_file", "")).parent.parent)
            by_run[(record["method"], record["seed"], run)].append(record)
    chosen = []
    for candidates in by_run.values():
        scored = [(mean_fid(r), i, r) for i, r in enumerate(candidates) if mean_fid(r) is not None]
        if scored:
            _, _, best = min(scored, key=lambda item: item[:2])
            chosen.append({**best, "checkpoint": {"selection": BEST_ON_TEST, "path": None,
                                                  "chosen_from": f"{len(candidates)} in-training test evaluations",
                                                  "epoch": best.get("epoch"), "step": best.get("step")}})
    return chosen


def mean_fid(record: dict) -> float | None:
    values = [as_number(metrics.get("fid")) for metrics in record["metrics"].values()]
    return statistics.fmean(values) if values and None not in values else None


def compare(results_a: Path, results_b: Path, selection: str = "last", level: float = 0.95) -> str:
    """Per task, method and metric: A, B, B − A, its uncertainty and a verdict (`bench.comparison`)."""
    from i2ibench.bench.comparison import compare_results

    return compare_results(Path(results_a), Path(results_b), selection, level)
