"""How sure a table can be: the uncertainty of a cell, which best is beyond it, and whether a
difference between two result sets is significant. Pure functions on summaries and numbers.

A cell's uncertainty interval (used for ranking, `cell_interval`):
- one seed: the bootstrap percentile interval over test images (`[lo, hi]` in the cell);
- several seeds: mean +- std over seeds, and when the records carry bootstrap intervals, the
  hull of that and the seeds' mean bootstrap interval (the wider, conservative one wins);
- neither: unknown, and a column with an unknown interval among its methods is not ranked.

A best value is bold only when its interval overlaps no other method's; otherwise it and every
method whose interval overlaps it are marked as tied (`rank_marks`).

Significance of B - A (`bench.comparison`), from whichever of these both result sets allow:
- paired over seeds (2+ seeds in common): Student's t interval of the mean per-seed difference;
  seeds not in common (2+ each): Welch's t interval of the difference of means;
- paired over test images (both records carry bootstrap replicates drawn from the same resamples:
  same metric seed, number of resamples and number of evaluated images): the percentile interval
  of the per-resample differences (averaged over the paired seeds);
- otherwise, one seed with bootstrap intervals only: non-overlap of the two intervals.
The verdict names a winner only when every available interval excludes 0 on the same side.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

TIE = "≈"


def cell_interval(stats: dict | None) -> tuple[float, float] | None:
    """The interval a cell is ranked by (see the module docstring), None when unknown."""
    if not stats or stats.get("mean") is None or math.isnan(stats["mean"]):
        return None
    mean, std, ci = stats["mean"], stats.get("std"), stats.get("ci")
    ends = []
    if std is not None and math.isfinite(std):
        ends.append((mean - std, mean + std))
    if ci:
        ends.append((float(ci[0]), float(ci[1])))
    if not ends:
        return None
    return min(lo for lo, _ in ends), max(hi for _, hi in ends)


def distance_from_half(interval: tuple[float, float]) -> tuple[float, float]:
    """An interval of values mapped to their distance from 0.5 (the ideal 1-NN accuracy)."""
    lo, hi = interval
    far = max(abs(lo - 0.5), abs(hi - 0.5))
    return (0.0, far) if lo <= 0.5 <= hi else (min(abs(lo - 0.5), abs(hi - 0.5)), far)


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def rank_marks(methods: dict, key: str, direction: str) -> dict[str, str]:
    """{method: "best" | "tie"}: "best" for a best value beyond every other method's uncertainty, else
    "tie" for the best and every method whose interval overlaps it; {} when the column cannot be ranked
    (fewer than 2 methods with a value, or a method whose uncertainty is unknown)."""
    values = {m: v[key] for m, v in methods.items()
              if key in v and v[key].get("mean") is not None and not math.isnan(v[key]["mean"])}
    if len(values) < 2:
        return {}
    intervals = {m: cell_interval(stats) for m, stats in values.items()}
    if any(interval is None for interval in intervals.values()):
        return {}
    means = {m: stats["mean"] for m, stats in values.items()}
    if direction == "half":
        means = {m: abs(mean - 0.5) for m, mean in means.items()}
        intervals = {m: distance_from_half(interval) for m, interval in intervals.items()}
        direction = "lower"
    target = min(means.values()) if direction == "lower" else max(means.values())
    best = {m for m, mean in means.items() if mean == target}
    if len(best) == 1:
        [winner] = best
        if not any(overlap(intervals[winner], intervals[m]) for m in values if m != winner):
            return {winner: "best"}
    tied = {m for m in values if any(overlap(intervals[b], intervals[m]) for b in best)}
    return {m: "tie" for m in tied | best}


# --- two result sets -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """A level-interval of B - A, and how it was obtained."""

    low: float
    high: float
    test: str  # e.g. "paired over 3 seeds"


def t_quantile(level: float, dof: float) -> float:
    from scipy.stats import t

    return float(t.ppf((1 + level) / 2, dof))


def seed_interval(a: dict, b: dict, level: float) -> Interval | None:
    """B - A over seeds: paired t when 2+ seeds are in common, else Welch's t when each has 2+ seeds."""
    common = sorted(set(a) & set(b))
    if len(common) >= 2:
        differences = [b[s] - a[s] for s in common]
        if not all(math.isfinite(d) for d in differences):
            return None
        mean, spread = statistics.fmean(differences), statistics.stdev(differences)
        half = t_quantile(level, len(common) - 1) * spread / math.sqrt(len(common))
        return Interval(mean - half, mean + half, f"paired t over {len(common)} seeds")
    if len(a) >= 2 and len(b) >= 2:
        va, vb = list(a.values()), list(b.values())
        if not all(math.isfinite(v) for v in va + vb):
            return None
        sa, sb = statistics.variance(va) / len(va), statistics.variance(vb) / len(vb)
        if sa + sb == 0:
            dof = len(va) + len(vb) - 2
        else:
            dof = (sa + sb) ** 2 / (sa**2 / (len(va) - 1) + sb**2 / (len(vb) - 1))
        mean = statistics.fmean(vb) - statistics.fmean(va)
        half = t_quantile(level, dof) * math.sqrt(sa + sb)
        return Interval(mean - half, mean + half, f"Welch t, {len(va)} vs {len(vb)} seeds")
    return None


def paired_bootstrap_interval(pairs: list[tuple[np.ndarray, np.ndarray]], level: float,
                              observed: float | None = None) -> Interval | None:
    """B - A over test images: per resample, the difference of the two replicates (same resamples),
    averaged over the paired seeds; its percentile interval (order statistics outside the level),
    re-centred on the `observed` difference as the cells' intervals are (`metrics.bootstrap`)."""
    if not pairs or any(len(a) != len(b) or len(a) != len(pairs[0][0]) for a, b in pairs):
        return None
    differences = np.mean([b - a for a, b in pairs], axis=0)
    if not np.all(np.isfinite(differences)):
        return None
    low = float(np.quantile(differences, (1 - level) / 2, method="lower"))
    high = float(np.quantile(differences, (1 + level) / 2, method="higher"))
    if observed is not None and math.isfinite(observed):
        offset = observed - float(np.quantile(differences, 0.5, method="lower"))
        low, high = low + offset, high + offset
    seeds = f" ({len(pairs)} seeds)" if len(pairs) > 1 else ""
    return Interval(low, high, f"paired bootstrap over images, {len(differences)} resamples{seeds}")


def overlap_interval(a: list[float], b: list[float]) -> Interval:
    """No paired information: the range of B - A between the two intervals' ends; it excludes 0 exactly
    when the intervals do not overlap."""
    return Interval(b[0] - a[1], b[1] - a[0], "bootstrap intervals overlap?")


def verdict(intervals: list[Interval], direction: str) -> str:
    """`A better`, `B better`, `not significant`, or `no uncertainty` (nothing to judge by).

    `direction` of the metric: for "lower" a negative B - A favours B; intervals of a "half" metric are
    of the change in distance from 0.5.
    """
    if not intervals:
        return "no uncertainty"
    sides = set()
    for interval in intervals:
        if interval.low > 0:
            sides.add("up")
        elif interval.high < 0:
            sides.add("down")
        else:
            return "not significant"
    if len(sides) != 1:
        return "not significant"
    b_better = (sides == {"down"}) == (direction in ("lower", "half"))
    return "B better" if b_better else "A better"
