"""`i2ibench compare A B`: per task, method and metric, is B − A beyond the uncertainty of both?

Reads two result folders' results.json (their records, not only their summaries) and judges each
difference by these rules (`metric_intervals`, `uncertainty.verdict`):
- paired over seeds when both have 2+ seeds in common (Student's t interval of the mean per-seed
  difference), Welch's t when they have 2+ seeds each but not in common;
- paired over test images when both records of a seed carry bootstrap replicates drawn from the
  same resamples (same metric seed, number of resamples and of evaluated images): the percentile
  interval of the per-resample differences, averaged over the paired seeds;
- otherwise, with one seed and only intervals: whether the two bootstrap intervals overlap.
The verdict names the better result set only when every available interval of B − A excludes 0 on
the same side; `no uncertainty` when none is available (one seed, a metric not bootstrapped).
"""

from __future__ import annotations

import json
from pathlib import Path

from i2ibench.bench import uncertainty as U
from i2ibench.bench.report import ARROW, COLUMNS, as_number, card_key, format_cell, protocol_cards
from i2ibench.metrics.bootstrap import RESAMPLED, decode_replicates

RESAMPLE_CARD = ("bootstrap_resamples", "seed")  # card entries that fix the resamples (with N, K and the task)


def records_by(data: dict, selection: str) -> dict:
    """{task: {method: {seed: (record, metrics of the task)}}} of one selection."""
    out: dict = {}
    for record in data["records"]:
        if record["checkpoint"]["selection"] != selection:
            continue
        for task, metrics in record["metrics"].items():
            out.setdefault(task, {}).setdefault(record["method"], {})[record["seed"]] = (record, metrics)
    return out


def same_resamples(a: tuple[dict, dict], b: tuple[dict, dict]) -> bool:
    """Whether two records' replicates come from the same draws (then their differences pair)."""
    (record_a, metrics_a), (record_b, metrics_b) = a, b
    described = [m.get("bootstrap_replicates", {}).get(RESAMPLED) for m in (metrics_a, metrics_b)]
    return (all(record_a["protocol"].get(k) == record_b["protocol"].get(k) for k in RESAMPLE_CARD)
            and metrics_a.get("n_fake") == metrics_b.get("n_fake") and described[0] == described[1])


def as_direction(value: float, direction: str) -> float:
    """Values of a "half" metric become their distance from 0.5 (lower is better)."""
    return abs(value - 0.5) if direction == "half" else value


def metric_intervals(a: dict, b: dict, key: str, direction: str, level: float) -> list[U.Interval]:
    """The intervals of B − A that the two sets of per-seed records allow (see the module docstring)."""
    values = [{seed: as_direction(v, direction) for seed, (_, metrics) in side.items()
               if (v := as_number(metrics.get(key))) is not None} for side in (a, b)]
    intervals = []
    if (by_seed := U.seed_interval(values[0], values[1], level)) is not None:
        intervals.append(by_seed)
    common = sorted(set(a) & set(b), key=str)
    if not common and len(a) == 1 and len(b) == 1:  # one run each: its test images still pair
        common = [(next(iter(a)), next(iter(b)))]
    else:
        common = [(seed, seed) for seed in common]
    pairs, observed = [], []
    for seed_a, seed_b in common:
        replicates = [side[seed][1].get("bootstrap_replicates", {}).get(key) for side, seed in ((a, seed_a), (b, seed_b))]
        if None in replicates or not same_resamples(a[seed_a], b[seed_b]) \
                or seed_a not in values[0] or seed_b not in values[1]:
            pairs = []
            break
        pairs.append(tuple(as_direction(decode_replicates(r), direction) for r in replicates))
        observed.append(values[1][seed_b] - values[0][seed_a])
    if pairs and (by_images := U.paired_bootstrap_interval(pairs, level, sum(observed) / len(observed))) is not None:
        intervals.append(by_images)
    elif not intervals and len(a) == 1 and len(b) == 1:
        ci = [next(iter(side.values()))[1].get("intervals", {}).get(key) for side in (a, b)]
        if None not in ci and direction != "half":
            intervals.append(U.overlap_interval([as_number(v) for v in ci[0]], [as_number(v) for v in ci[1]]))
    return intervals


def interval_text(interval: U.Interval, scale: float) -> str:
    return f"[{interval.low * scale:+.3g}, {interval.high * scale:+.3g}] ({interval.test})"


def compare_results(results_a: Path, results_b: Path, selection: str = "last", level: float = 0.95) -> str:
    """The Markdown table of `i2ibench compare`: A, B, B − A, its intervals and a verdict per row.

    † marks a method whose protocol cards differ between A and B: its numbers are not comparable.
    """
    loaded = [json.loads((Path(p) / "results.json").read_text()) for p in (results_a, results_b)]
    cards = [protocol_cards(data["records"]) for data in loaded]
    summaries = [data["summary"].get(selection, {}) for data in loaded]
    records = [records_by(data, selection) for data in loaded]
    lines = [f"# compare ({selection} checkpoint)", "", f"- A: {results_a}", f"- B: {results_b}", "",
             f"B − A with its {level:.0%} interval(s): paired over seeds when both have 2+ seeds in common "
             "(t interval of the mean per-seed difference; Welch's t when the seeds differ), paired over test "
             "images when both records carry bootstrap replicates of the same resamples (percentile interval of "
             "the per-resample differences), else whether the two bootstrap intervals overlap. A verdict names "
             "the better set only when every interval excludes 0 on the same side; `no uncertainty` when there is "
             "nothing to judge by (one seed and no bootstrap).", "",
             "| task | method | metric | A | B | B − A | interval of B − A | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for task in sorted(set(summaries[0]) & set(summaries[1])):
        for method in sorted(set(summaries[0][task]) & set(summaries[1][task])):
            mark = ""
            if method in cards[0] and method in cards[1] and \
                    card_key({"protocol": cards[0][method]}) != card_key({"protocol": cards[1][method]}):
                mark = " †"
            sides = [records[i].get(task, {}).get(method, {}) for i in (0, 1)]
            for key, title, direction, scale in COLUMNS:
                a, b = (summaries[i][task][method].get(key) for i in (0, 1))
                if a is None or b is None:
                    continue
                a, b = ({**stats, "mean": as_number(stats["mean"])} for stats in (a, b))  # "inf" read back
                delta = (b["mean"] - a["mean"]) * scale
                intervals = metric_intervals(sides[0], sides[1], key, direction, level)
                shown = "; ".join(interval_text(i, scale) for i in intervals) or "—"
                if direction == "half" and intervals:
                    shown += " (of the distance from 0.5)"
                lines.append(f"| {task} | {method}{mark} | {title} {ARROW[direction]} | {format_cell(a, scale)} | "
                             f"{format_cell(b, scale)} | {delta:+.4g} | {shown} | "
                             f"{U.verdict(intervals, direction)} |")
    only = [f"{m} ({t}) only in {'AB'[i]}" for i in (0, 1) for t in summaries[i]
            for m in summaries[i][t] if m not in summaries[1 - i].get(t, {})]
    if only:
        lines += ["", "Not in both: " + "; ".join(sorted(set(only)))]
    if any("†" in line for line in lines):
        lines += ["", "† protocol cards differ between A and B for this method: the difference is not a "
                      "like-for-like comparison."]
    return "\n".join(lines) + "\n"

