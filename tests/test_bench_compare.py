"""`i2ibench compare A B`: is each difference beyond the uncertainty of both result sets?

Records are made the way the Evaluator makes them (distribution metrics and bootstrap replicates of
fixed features, `metrics.bootstrap`), without Inception: a large shift of the translated features
must be called significant, another sample of the same distribution must not.
"""

from __future__ import annotations

from pathlib import Path

import torch

from i2ibench import files
from i2ibench.bench import report
from i2ibench.metrics import bootstrap as BS
from i2ibench.metrics.suite import DistributionSettings, distribution_metrics

SETTINGS = DistributionSettings(kid_subsets=10, is_splits=1, bootstrap_resamples=200)
CARD = {"image_size": 64, **SETTINGS.card()}
N, DIM = 60, 32


def sample(seed: int, shift: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(N, DIM, generator=generator) + 0.5 + shift)


REAL = sample(1000)


def evaluated(method: str, seed: int, fake: torch.Tensor, selection: str = "last") -> dict:
    """One test record with the metrics, intervals and replicates the Evaluator would write."""
    metrics, unavailable = distribution_metrics(REAL, fake, SETTINGS)
    resample = BS.Resample.draw(N, SETTINGS.bootstrap_resamples, SETTINGS.seed, "A2B")
    replicates = BS.distribution_replicates(REAL, fake, resample.image_counts, metrics["mmd_bandwidth"],
                                            metrics["mmd_xu_scale"])
    metrics.update(BS.record_entries(replicates, metrics, SETTINGS.bootstrap_level, resample.describe("A2B", SETTINGS.seed)))
    return {"schema": "i2ibench.eval/1", "dataset": {"name": "toy", "split": "test"}, "method": method, "seed": seed,
            "epoch": 4, "step": 40, "checkpoint": {"selection": selection, "path": None}, "protocol": CARD,
            "metrics": {"A2B": metrics}, "unavailable": {"A2B": unavailable}}


def results(root: Path, records: list[dict]) -> Path:
    runs = []
    for i, r in enumerate(records):
        run = root / "runs" / r["method"] / f"seed{r['seed']}"
        files.write_json(run / "eval" / f"test-{r['checkpoint']['selection']}-{i}.json", r)
        runs.append(run)
    report.write_results(root / "results", sorted(set(runs)), {}, {})
    return root / "results"


def row(table: str, method: str, metric: str) -> list[str]:
    [line] = [line for line in table.splitlines() if line.startswith(f"| A2B | {method} | {metric}")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_a_large_shift_is_significant_and_the_same_distribution_is_not_over_test_images(tmp_path):
    """One seed each: the paired bootstrap over test images decides. `shifted` translates to features far
    from the real ones; `again` is another draw of `base`'s distribution."""
    a = results(tmp_path / "a", [evaluated("base", 0, sample(1)), evaluated("same", 0, sample(1))])
    b = results(tmp_path / "b", [evaluated("base", 0, sample(2, shift=1.5)), evaluated("same", 0, sample(3))])
    table = report.compare(a, b)
    for metric in ("FID ↓", "KID×10³ ↓", "MMD²×10³ ↓", "MMD(Xu) ↓"):
        shifted = row(table, "base", metric)
        assert shifted[-1] == "A better", shifted
        assert "paired bootstrap over images, 200 resamples" in shifted[-2]
        same = row(table, "same", metric)
        assert same[-1] == "not significant", same
    assert row(table, "base", "1-NN acc. →0.5")[-1] == "no uncertainty"  # not bootstrapped, one seed
    assert "| interval of B − A | verdict |" in table


def test_replicates_of_other_resamples_are_not_paired(tmp_path):
    """B's records come from other draws (another task's seeding): no paired bootstrap, the intervals'
    overlap decides instead, and still calls the large shift."""
    a = results(tmp_path / "a", [evaluated("base", 0, sample(1))])
    shifted = evaluated("base", 0, sample(2, shift=1.5))
    shifted["metrics"]["A2B"]["bootstrap_replicates"]["resampled"] = "task B2A, seed 2020, 200 resamples of 60 sources x 1 outputs"
    b = results(tmp_path / "b", [shifted])
    fid = row(report.compare(a, b), "base", "FID ↓")
    assert "overlap" in fid[-2] and "paired bootstrap" not in fid[-2] and fid[-1] == "A better"


def test_paired_seeds_decide_when_several_seeds_are_in_common(tmp_path):
    """Three seeds in common: per-seed differences of -8 +- 0.5 are significant, differences of +1 / -1 / 0.5
    are not; each also has the images' interval, so both must agree."""
    base = [sample(10 + s) for s in range(3)]
    a = results(tmp_path / "a", [evaluated("m", s, base[s]) for s in range(3)])
    b = results(tmp_path / "b", [evaluated("m", s, sample(20 + s, shift=1.0)) for s in range(3)])
    table = report.compare(a, b)
    fid = row(table, "m", "FID ↓")
    assert "paired t over 3 seeds" in fid[-2] and fid[-1] == "A better"


def test_seed_differences_without_bootstrap(tmp_path):
    """Old-style records (no bootstrap): only the seeds decide; t interval from the paired differences."""
    def plain(method, seed, fid):
        r = evaluated(method, seed, sample(seed))
        r["metrics"]["A2B"] = {"n_real": N, "n_fake": N, "fid": fid}
        return r

    a = results(tmp_path / "a", [plain("m", 0, 50.0), plain("m", 1, 52.0), plain("m", 2, 51.0),
                                 plain("n", 0, 50.0), plain("n", 1, 52.0), plain("n", 2, 51.0)])
    b = results(tmp_path / "b", [plain("m", 0, 42.0), plain("m", 1, 44.5), plain("m", 2, 42.5),
                                 plain("n", 0, 51.0), plain("n", 1, 51.0), plain("n", 2, 51.5)])
    table = report.compare(a, b)
    assert row(table, "m", "FID")[-1] == "B better"  # differences -8, -7.5, -8.5
    assert row(table, "n", "FID")[-1] == "not significant"  # differences +1, -1, +0.5
    assert "paired t over 3 seeds" in row(table, "n", "FID")[-2]


def test_compare_command_prints_the_verdicts(tmp_path, capsys):
    from i2ibench.cli import main

    a = results(tmp_path / "a", [evaluated("base", 0, sample(1))])
    b = results(tmp_path / "b", [evaluated("base", 0, sample(2, shift=1.5))])
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c.md")]) == 0
    out = capsys.readouterr().out
    assert "A better" in out and (tmp_path / "c.md").read_text().strip() == out.strip()
