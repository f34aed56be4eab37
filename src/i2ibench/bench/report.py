"""Result tables from evaluation records (and nothing else): Markdown, CSV, JSON, samples, plots.

Reference rows (`copy-input`, `real-target`; see `bench.reference_rows`) are records like the
others, with checkpoint selection `reference`: they appear in every task table of every
checkpoint selection, in italics and tagged "(reference)", and are never bold: the best value
of a column is chosen among the methods only. Their card is checked like a method's (†).

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
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from i2ibench import files

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
SELECTIONS = ("last", "best-on-validation")
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
    for record in records:
        selection = record["checkpoint"]["selection"]
        if selection not in selections or record["method"] in exclude:
            continue
        for task, metrics in record["metrics"].items():
            for name, value in metrics.items():
                if (number := as_number(value)) is not None:
                    values[selection][task][record["method"]][name].append(number)
    summary: dict = {}
    for selection, tasks in values.items():
        for task, methods in tasks.items():
            for method, metrics in methods.items():
                for name, numbers in metrics.items():
                    finite = [n for n in numbers if math.isfinite(n)]
                    mean = statistics.fmean(numbers) if len(finite) == len(numbers) else float("inf")
                    std = statistics.stdev(numbers) if len(numbers) > 1 and len(finite) == len(numbers) else None
                    summary.setdefault(selection, {}).setdefault(task, {}).setdefault(method, {})[name] = {
                        "mean": mean, "std": std, "n": len(numbers)}
    return summary


def card_key(record: dict) -> str:
    return json.dumps({k: v for k, v in record["protocol"].items() if k not in CARD_NOTES}, sort_keys=True)


def protocol_cards(records: list[dict]) -> dict[str, dict]:
    """The protocol card of each method's test records (the first one seen)."""
    cards = {}
    for record in records:
        if record["checkpoint"]["selection"] in SELECTIONS:
            cards.setdefault(record["method"], record["protocol"])
    return cards


def format_cell(stats: dict | None, scale: float) -> str:
    if stats is None:
        return "n/a"
    mean = stats["mean"] * scale
    text = f"{mean:.4g}" if abs(mean) < 1000 else f"{mean:.0f}"
    if stats["std"] is not None:
        text += f" ± {stats['std'] * scale:.2g}"
    return text


def best_methods(methods: dict, key: str, direction: str) -> set[str]:
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
             failed: dict[str, dict[int, str]], reference_failure: str | None = None) -> str:
    tests = [r for r in records if r["checkpoint"]["selection"] in SELECTIONS]
    references = [r for r in records if is_reference(r)]
    cards = {**protocol_cards(tests), **{r["method"]: r["protocol"] for r in references}}
    # The common card is the methods' most frequent one; reference rows follow it, they do not set it.
    counted = [card_key(r) for r in (tests or references)]
    majority = max(set(counted), key=counted.count, default=None)
    differs = {m for m, card in cards.items() if card_key({"protocol": card}) != majority}
    seeds = sorted({r["seed"] for r in records if r["seed"] is not None})
    lines = [f"# {dataset} — {protocol} protocol", "",
             f"Mean ± std over seeds {seeds} (± only with 2+ seeds). ↓ lower is better, ↑ higher is better; "
             "the best value of each column among the methods is in **bold**. Test split; rows marked † were "
             "measured under a different protocol card (see below) and are not comparable with the others.", ""]
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
    for selection in SELECTIONS:
        for task, methods in sorted(summary.get(selection, {}).items()):
            columns = [c for c in COLUMNS if any(c[0] in v for v in methods.values())
                       or c[0] in unavailable or c[0].removesuffix("_mean") in unavailable]  # IS: n/a, said why
            lines += [f"## {task} — {selection} checkpoint", "",
                      "| method | " + " | ".join(f"{title} {ARROW[d]}" for _, title, d, _ in columns) + " |",
                      "|---|" + "---|" * len(columns)]
            best = {key: best_methods(methods, key, d) for key, _, d, _ in columns}  # methods only
            failed_here = tested[(selection, task)] & set(failed)  # `methods` (the summary) holds no failed one
            for method in sorted(set(methods) | failed_here):
                if method in failed_here:
                    lines.append(f"| {method} | " + " | ".join(["failed"] * len(columns)) + " |")
                    continue
                cells = []
                for key, _, _, scale in columns:
                    cell = format_cell(methods[method].get(key), scale)
                    cells.append(f"**{cell}**" if method in best[key] and len(methods) > 1 else cell)
                mark = " †" if method in differs else ""
                lines.append(f"| {method}{mark} | " + " | ".join(cells) + " |")
            for label, values in sorted(reference_rows.get(task, {}).items()):
                cells = [f"*{format_cell(values.get(key), scale)}*" for key, _, _, scale in columns]
                mark = " †" if label in differs else ""
                lines.append(f"| *{label}* (reference){mark} | " + " | ".join(cells) + " |")
            lines.append("")
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
    lines += ["## Protocol card", ""]
    if majority:
        lines += [f"- {k}: {v}" for k, v in json.loads(majority).items()]
    for method in sorted(differs):
        diff = {k: v for k, v in cards[method].items() if json.loads(majority or "{}").get(k) != v and k not in CARD_NOTES}
        lines.append(f"- † {method} differs: {json.dumps(diff)}")
    return "\n".join(lines) + "\n"


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
            for name, value in metrics.items():
                writer.writerow([r["dataset"]["name"], r["method"], r["seed"], r["dataset"]["split"],
                                 r["checkpoint"]["selection"], r["epoch"], r["step"], task, name, value])
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


def write_results(out: Path, run_roots: list[Path], skipped: dict[str, str],
                  failed: dict[str, dict[int, str]], reference_roots: Iterable[Path] = (),
                  reference_failure: str | None = None) -> None:
    """results.md / .csv / .json, samples.png and plots/ from the runs' records and the reference rows'."""
    references = reference_labels(load_records(reference_roots))
    records = load_records(run_roots) + references
    tests = [r for r in records if r["checkpoint"]["selection"] in SELECTIONS]
    dataset = (tests or references)[0]["dataset"]["name"] if (tests or references) else out.parent.name
    summary = summarize(records, exclude=failed)
    if references:
        summary.update(summarize(references, selections=(REFERENCE,)))
    files.write_text(out / "results.md", markdown(dataset, out.name, records, summary, skipped, failed,
                                                  reference_failure))
    files.write_text(out / "results.csv", csv_text(records))
    files.write_json(out / "results.json", {"dataset": dataset, "protocol": out.name, "skipped": skipped,
                                            "failed": {m: {str(seed): reason for seed, reason in by_seed.items()}
                                                       for m, by_seed in failed.items()},
                                            "reference_failure": reference_failure,
                                            "summary": summary,
                                            "records": [{k: v for k, v in r.items() if k != "_file"} for r in records]})
    write_samples(out, run_roots)
    write_plots(out, records)


def compare(results_a: Path, results_b: Path, selection: str = "last") -> str:
    """A side-by-side Markdown table of two result folders: A, B and B - A per method, task and metric.

    † marks a method whose protocol cards differ between A and B: its numbers are not comparable.
    """
    loaded = [json.loads((Path(p) / "results.json").read_text()) for p in (results_a, results_b)]
    cards = [protocol_cards(data["records"]) for data in loaded]
    summaries = [data["summary"].get(selection, {}) for data in loaded]
    lines = [f"# compare ({selection} checkpoint)", "", f"- A: {results_a}", f"- B: {results_b}", "",
             "| task | method | metric | A | B | B − A |", "|---|---|---|---|---|---|"]
    for task in sorted(set(summaries[0]) & set(summaries[1])):
        for method in sorted(set(summaries[0][task]) & set(summaries[1][task])):
            mark = ""
            if method in cards[0] and method in cards[1] and \
                    card_key({"protocol": cards[0][method]}) != card_key({"protocol": cards[1][method]}):
                mark = " †"
            for key, title, direction, scale in COLUMNS:
                a, b = (summaries[i][task][method].get(key) for i in (0, 1))
                if a is None or b is None:
                    continue
                a, b = ({**stats, "mean": as_number(stats["mean"])} for stats in (a, b))  # "inf" read back
                delta = (b["mean"] - a["mean"]) * scale
                lines.append(f"| {task} | {method}{mark} | {title} {ARROW[direction]} | {format_cell(a, scale)} | "
                             f"{format_cell(b, scale)} | {delta:+.4g} |")
    only = [f"{m} ({t}) only in {'AB'[i]}" for i in (0, 1) for t in summaries[i]
            for m in summaries[i][t] if m not in summaries[1 - i].get(t, {})]
    if only:
        lines += ["", "Not in both: " + "; ".join(sorted(set(only)))]
    if any("†" in line for line in lines):
        lines += ["", "† protocol cards differ between A and B for this method: the difference is not a "
                      "like-for-like comparison."]
    return "\n".join(lines) + "\n"
