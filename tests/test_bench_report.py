"""Result tables from records: aggregation over seeds, best marks, protocol marks, compare."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from i2ibench import files
from i2ibench.bench import report

CARD = {"image_size": 64, "weights_sha256": "abc", "kid_subsets": 100, "lpips": "unavailable: no weights"}


def record(method: str, seed: int, fid: float, ssim: float, selection: str = "last", card: dict | None = None,
           epoch: int = 3, intervals: dict | None = None, n: int = 5) -> dict:
    """A record as the EvaluationCallback writes it; `intervals`: the bootstrap intervals it carries."""
    metrics = {"n_real": n, "n_fake": n, "fid": fid, "kid_mean": fid / 1000, "ssim_gt": ssim,
               "psnr_gt": "inf", "lpips_gt": None, "is_mean": None}
    if intervals is not None:
        metrics["intervals"] = intervals
    return {"schema": "i2ibench.eval/1", "dataset": {"name": "toy", "split": "test"}, "method": method, "seed": seed,
            "epoch": epoch, "step": 10 * epoch, "checkpoint": {"selection": selection, "path": None},
            "protocol": card or CARD, "metrics": {"A2B": metrics},
            "unavailable": {"A2B": {"is": "no classifier", "lpips_gt": "no weights"}}}


def write_runs(root: Path, records: list[dict]) -> list[Path]:
    runs = []
    for i, r in enumerate(records):
        run = root / r["method"] / f"seed{r['seed']}"
        files.write_json(run / "eval" / f"{r['checkpoint']['selection']}-{i}.json", r)
        runs.append(run)
    return sorted(set(runs))


def test_mean_and_std_over_seeds_and_best_marks(tmp_path):
    runs = write_runs(tmp_path / "runs", [record("cyclegan", 0, 50.0, 0.40), record("cyclegan", 1, 54.0, 0.44),
                                          record("ssim-lsgan", 0, 60.0, 0.50), record("ssim-lsgan", 1, 62.0, 0.52)])
    out = tmp_path / "results" / "toy" / "smoke"
    report.write_results(out, runs, skipped={"stargan-v2": "needs 3 domains"}, failed={})
    summary = json.loads((out / "results.json").read_text())["summary"]["last"]["A2B"]
    assert summary["cyclegan"]["fid"]["mean"] == pytest.approx(52.0)
    assert summary["cyclegan"]["fid"]["std"] == pytest.approx(statistics.stdev([50.0, 54.0]))
    assert summary["ssim-lsgan"]["ssim_gt"]["mean"] == pytest.approx(0.51)
    table = (out / "results.md").read_text()
    cyclegan_row = next(line for line in table.splitlines() if line.startswith("| cyclegan"))
    lsgan_row = next(line for line in table.splitlines() if line.startswith("| ssim-lsgan"))
    assert "**52 ± 2.8**" in cyclegan_row  # lower FID is better: cyclegan's is bold
    assert "**0.51 ± 0.014**" in lsgan_row  # higher SSIM is better: ssim-lsgan's is bold
    assert "FID‡ ↓" in table and "SSIM(gt) ↑" in table  # N = 5 < 2048: FID flagged, KID first
    assert "stargan-v2 | not applicable: needs 3 domains" in table
    assert "no classifier" in table  # why IS is missing is said, not hidden
    assert "IS ↑" in table and cyclegan_row.count("n/a") >= 2  # and its column is there, reading n/a
    assert "inf" in cyclegan_row  # identical images: PSNR is infinite, shown as such
    csv_rows = (out / "results.csv").read_text().splitlines()
    assert csv_rows[0].startswith("dataset,method,seed") and len(csv_rows) == 1 + 4 * 8


def test_rows_under_another_protocol_card_are_marked(tmp_path):
    other = {**CARD, "image_size": 128}
    runs = write_runs(tmp_path / "runs", [record("cyclegan", 0, 50.0, 0.4), record("densenet-cyclegan", 0, 40.0, 0.3),
                                          record("inception-cyclegan", 0, 45.0, 0.35, card=other)])
    out = tmp_path / "out"
    report.write_results(out, runs, {}, {})
    table = (out / "results.md").read_text()
    assert "| inception-cyclegan † |" in table and "| cyclegan |" in table
    assert '"image_size": 128' in table


def test_compare_shows_differences_and_marks_card_changes(tmp_path):
    a_runs = write_runs(tmp_path / "a", [record("cyclegan", 0, 50.0, 0.4), record("ssim-lsgan", 0, 60.0, 0.5)])
    b_runs = write_runs(tmp_path / "b", [record("cyclegan", 0, 45.0, 0.42),
                                         record("ssim-lsgan", 0, 58.0, 0.5, card={**CARD, "kid_subsets": 10})])
    report.write_results(tmp_path / "ra", a_runs, {}, {})
    report.write_results(tmp_path / "rb", b_runs, {}, {})
    table = report.compare(tmp_path / "ra", tmp_path / "rb")
    fid_row = next(line for line in table.splitlines() if "| cyclegan |" in line and "FID" in line)
    assert "| 50 | 45 | -5 |" in fid_row
    assert any("ssim-lsgan †" in line for line in table.splitlines())
    assert "not a like-for-like comparison" in table


def test_training_curves_are_plotted_from_in_training_records(tmp_path):
    records = [record("cyclegan", 0, fid, 0.4, selection="in-training", epoch=e) for e, fid in enumerate([90, 70, 60])]
    runs = write_runs(tmp_path / "runs", records + [record("cyclegan", 0, 60, 0.4)])
    report.write_results(tmp_path / "out", runs, {}, {})
    assert (tmp_path / "out" / "plots" / "fid.png").stat().st_size > 1000


def test_an_infinite_psnr_is_the_best_value_and_nan_never_is():
    from i2ibench.bench.report import best_methods

    methods = {"kept": {"psnr": {"mean": float("inf")}}, "blurred": {"psnr": {"mean": 20.2}},
               "broken": {"psnr": {"mean": float("nan")}}}
    assert best_methods(methods, "psnr", "higher") == {"kept"}
    assert best_methods(methods, "psnr", "lower") == {"blurred"}


def test_a_method_with_a_failed_seed_shows_the_reason_and_no_numbers(tmp_path):
    # cyclegan: seeds 0 and 1 finished, seed 2 diverged; its mean over the survivors would look fine.
    runs = write_runs(tmp_path / "runs", [record("cyclegan", 0, 50.0, 0.40), record("cyclegan", 1, 54.0, 0.44),
                                          record("ssim-lsgan", 0, 60.0, 0.50)])
    reason = "non-finite loss at step 7 (epoch 0): gen_total=nan | disc_A=inf"
    out = tmp_path / "results" / "toy" / "smoke"
    report.write_results(out, runs, skipped={}, failed={"cyclegan": {2: reason}, "instagan": {0: "killed by signal 9"}})
    table = (out / "results.md").read_text().splitlines()
    assert "| cyclegan | 2 | failed: non-finite loss at step 7 (epoch 0): gen_total=nan \\| disc_A=inf |" in table
    assert "| instagan | 0 | failed: killed by signal 9 |" in table
    cyclegan_rows = [line for line in table if line.startswith("| cyclegan |")]
    assert len(cyclegan_rows) == 2 and set(cyclegan_rows[1].strip("| ").split(" | ")) == {"cyclegan", "failed"}
    assert "52" not in "\n".join(table) and "**60" not in "\n".join(table)  # no mean over survivors, no best mark
    assert any(line.startswith("| ssim-lsgan |") and "60" in line for line in table)
    results = json.loads((out / "results.json").read_text())
    assert results["failed"] == {"cyclegan": {"2": reason}, "instagan": {"0": "killed by signal 9"}}
    assert "cyclegan" not in results["summary"]["last"]["A2B"]
    assert len([r for r in results["records"] if r["method"] == "cyclegan"]) == 2  # raw records are kept


def reference_record(kind: str, fid: float, ssim: float | None, card: dict | None = None) -> dict:
    """A reference row's record as `bench.reference_rows` writes it (selection `reference`, a `reference` entry)."""
    metrics = {"n_real": 5, "n_fake": 5, "fid": fid, "kid_mean": fid / 1000, "is_mean": None}
    unavailable = {"is": "no classifier"}
    if ssim is None:
        unavailable.update({"ssim_gt": "undefined for real-target: no correspondence"})
    else:
        metrics.update({"ssim_gt": ssim, "psnr_gt": 12.0, "lpips_gt": None})
    return {"schema": "i2ibench.eval/1", "dataset": {"name": "toy", "split": "test"}, "method": kind, "seed": None,
            "epoch": None, "step": None, "checkpoint": {"selection": "reference", "path": None},
            "protocol": card or CARD, "metrics": {"A2B": metrics}, "unavailable": {"A2B": unavailable},
            "reference": {"kind": kind, "what": f"what {kind} is", "tasks": {"A2B": {"n_fake": 5}}}}


def write_references(root: Path, records: list[dict]) -> list[Path]:
    folders = []
    for i, r in enumerate(records):
        folder = root / f"key{i}"
        files.write_json(folder / "eval" / f"test-{r['method']}.json", r)
        folders.append(folder)
    return folders


def table_rows(table: str, start: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith(start)]


def test_reference_rows_are_in_every_table_in_italics_and_never_ranked(tmp_path):
    # The references beat every method on FID (real-target) and on SSIM(gt) (copy-input): still no bold for them,
    # and the methods' best values stay bold.
    narrow = {"cyclegan": {"fid": [49, 51], "ssim_gt": [0.39, 0.41]},
              "ssim-lsgan": {"fid": [59, 61], "ssim_gt": [0.49, 0.51]}}
    runs = write_runs(tmp_path / "runs", [record("cyclegan", 0, 50.0, 0.40, intervals=narrow["cyclegan"]),
                                          record("ssim-lsgan", 0, 60.0, 0.50, intervals=narrow["ssim-lsgan"]),
                                          record("cyclegan", 0, 48.0, 0.41, selection="best-on-validation")])
    refs = write_references(tmp_path / "ref", [reference_record("copy-input", 120.0, 0.90),
                                               reference_record("real-target", 5.0, None)])
    out = tmp_path / "out"
    report.write_results(out, runs, {}, {}, refs)
    table = (out / "results.md").read_text()
    for selection in ("last", "best-on-validation"):
        section = table.split(f"## A2B — {selection} checkpoint")[1].split("##")[0]
        copy_row = table_rows(section.strip(), "| *copy-input* (reference) |")
        real_row = table_rows(section.strip(), "| *real-target* (reference) |")
        assert len(copy_row) == 1 and len(real_row) == 1, section
        assert "**" not in copy_row[0] + real_row[0]  # never bold
        assert "*120*" in copy_row[0] and "*0.9*" in copy_row[0] and "*5*" in real_row[0]
        assert "*n/a*" in real_row[0]  # SSIM(gt) has no meaning for real-target
    last = table.split("## A2B — last checkpoint")[1].split("##")[0]
    assert "**50 [49, 51]**" in table_rows(last.strip(), "| cyclegan |")[0]  # best FID among the methods, not 5
    assert "**0.5 [0.49, 0.51]**" in table_rows(last.strip(), "| ssim-lsgan |")[0]  # best SSIM, not 0.9
    assert "## Reference rows" in table and "undefined for real-target" in table
    assert "undefined for real-target" not in table.split("## Unavailable metrics")[1].split("##")[0]
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["reference"]["A2B"]["real-target"]["fid"]["mean"] == 5.0
    assert "copy-input" not in results["summary"]["last"]["A2B"]  # not a method: never in a ranked summary
    assert any(r["method"] == "copy-input" for r in results["records"])
    assert "copy-input" in (out / "results.csv").read_text()


def test_reference_rows_under_several_cards_are_named_by_size_and_marked(tmp_path):
    # The paper protocol: each method at its own image size; one pair of reference rows per card.
    big = {**CARD, "image_size": 128}
    runs = write_runs(tmp_path / "runs", [record("cyclegan", 0, 50.0, 0.4), record("cut", 0, 55.0, 0.4),
                                          record("ssim-lsgan", 0, 60.0, 0.5, card=big)])
    refs = write_references(tmp_path / "ref", [reference_record("copy-input", 120.0, 0.9),
                                               reference_record("copy-input", 110.0, 0.8, card=big)])
    out = tmp_path / "out"
    report.write_results(out, runs, {}, {}, refs)
    table = (out / "results.md").read_text()
    assert len(table_rows(table, "| *copy-input [64 px]* (reference) |")) == 1  # the common card: unmarked
    assert len(table_rows(table, "| *copy-input [128 px]* (reference) † |")) == 1
    assert "| ssim-lsgan † |" in table
    assert "- image_size: 64" in table  # the methods' majority card stays the table's card


def test_a_reference_failure_is_reported_and_the_tables_still_written(tmp_path):
    runs = write_runs(tmp_path / "runs", [record("cyclegan", 0, 50.0, 0.4)])
    report.write_results(tmp_path / "out", runs, {}, {}, [], "DataError: trainB is empty")
    table = (tmp_path / "out" / "results.md").read_text()
    assert "reference rows could not be computed: DataError: trainB is empty" in table
    assert "| cyclegan |" in table


def test_one_nn_accuracy_is_best_closest_to_one_half():
    from i2ibench.bench.report import best_methods

    methods = {"a": {"nn1_accuracy": {"mean": 0.9}}, "b": {"nn1_accuracy": {"mean": 0.45}},
               "c": {"nn1_accuracy": {"mean": 0.3}}}
    assert best_methods(methods, "nn1_accuracy", "half") == {"b"}


# --- uncertainty in every cell, bold only beyond it, N and the headline column, selection rules ---------

def last_section(table: str, task: str = "A2B", selection: str = "last") -> str:
    return table.split(f"## {task} — {selection} checkpoint")[1].split("\n## ")[0]


def test_bold_only_beyond_every_other_interval_and_ties_marked_when_they_overlap(tmp_path):
    """FID: cyclegan 50 [46, 54] overlaps cut 52 [49, 56]: a tie (≈ on both), even though 50 < 52; the third
    method, clear of both, is not in the tie. SSIM(gt): ssim-lsgan 0.6 [0.58, 0.62] is clear of every other
    interval: bold."""
    runs = write_runs(tmp_path / "runs", [
        record("cyclegan", 0, 50.0, 0.40, intervals={"fid": [46, 54], "ssim_gt": [0.38, 0.42], "kid_mean": [0.04, 0.06]}),
        record("cut", 0, 52.0, 0.45, intervals={"fid": [49, 56], "ssim_gt": [0.43, 0.47], "kid_mean": [0.05, 0.06]}),
        record("ssim-lsgan", 0, 80.0, 0.60, intervals={"fid": [75, 85], "ssim_gt": [0.58, 0.62], "kid_mean": [0.07, 0.09]}),
    ])
    report.write_results(tmp_path / "out", runs, {}, {})
    table = (tmp_path / "out" / "results.md").read_text()
    section = last_section(table)
    header = table_rows(section.strip(), "| method |")[0].split(" | ")
    fid, ssim = header.index("FID‡ ↓"), header.index("SSIM(gt) ↑")
    cells = {name: table_rows(section.strip(), f"| {name} |")[0].split(" | ") for name in ("cyclegan", "cut", "ssim-lsgan")}
    assert cells["cyclegan"][fid] == "≈50 [46, 54]" and cells["cut"][fid] == "≈52 [49, 56]"
    assert cells["ssim-lsgan"][fid] == "80 [75, 85]"  # clear of the best: not tied, not bold
    assert cells["ssim-lsgan"][ssim] == "**0.6 [0.58, 0.62]**"
    assert "**" not in cells["cyclegan"][fid] + cells["cut"][fid]
    assert "≈: no such winner" in table and "beyond the uncertainty of every other method" in table


def test_a_column_without_uncertainty_is_not_ranked_and_seeds_give_mean_std_and_interval(tmp_path):
    """One seed, no bootstrap interval: no bold and no tie (nothing to judge by). Two seeds with intervals:
    `mean ± std [mean lo, mean hi]`, ranked by the hull of both."""
    runs = write_runs(tmp_path / "one", [record("cyclegan", 0, 50.0, 0.4), record("cut", 0, 90.0, 0.2)])
    report.write_results(tmp_path / "out1", runs, {}, {})
    section = last_section((tmp_path / "out1" / "results.md").read_text())
    assert "**" not in section and "≈" not in section
    runs = write_runs(tmp_path / "two", [
        record("cyclegan", 0, 50.0, 0.4, intervals={"fid": [45, 55]}), record("cyclegan", 1, 54.0, 0.4, intervals={"fid": [49, 61]}),
        record("cut", 0, 60.0, 0.2, intervals={"fid": [58, 62]}), record("cut", 1, 62.0, 0.2, intervals={"fid": [60, 66]})])
    report.write_results(tmp_path / "out2", runs, {}, {})
    section = last_section((tmp_path / "out2" / "results.md").read_text())
    # cyclegan 52 ± 2.8, mean interval [47, 58] (its hull with 52 ± 2.8); cut 61 ± 1.4 [59, 64]: 58 < 59, bold
    assert "**52 ± 2.8 [47, 58]**" in table_rows(section.strip(), "| cyclegan |")[0]
    assert "61 ± 1.4 [59, 64]" in table_rows(section.strip(), "| cut |")[0]
    summary = json.loads((tmp_path / "out2" / "results.json").read_text())["summary"]["last"]["A2B"]
    assert summary["cyclegan"]["fid"]["ci"] == [47.0, 58.0]


def test_n_is_shown_and_kid_is_the_headline_below_2048_images(tmp_path):
    small = write_runs(tmp_path / "small", [record("cyclegan", 0, 50.0, 0.4, n=100)])
    large = write_runs(tmp_path / "large", [record("cyclegan", 0, 50.0, 0.4, n=5000)])
    report.write_results(tmp_path / "s", small, {}, {})
    report.write_results(tmp_path / "l", large, {}, {})
    header_small = table_rows(last_section((tmp_path / "s" / "results.md").read_text()).strip(), "| method |")[0]
    header_large = table_rows(last_section((tmp_path / "l" / "results.md").read_text()).strip(), "| method |")[0]
    assert header_small.startswith("| method | N | KID×10³ ↓ | FID‡ ↓ |")
    assert header_large.startswith("| method | N | FID ↓ | KID×10³ ↓ |")
    assert "| cyclegan | 100 |" in (tmp_path / "s" / "results.md").read_text()
    assert "rank-deficient" in (tmp_path / "s" / "results.md").read_text()
    assert "rank-deficient" not in (tmp_path / "l" / "results.md").read_text().split("## Protocol card")[0]


def test_every_table_states_its_selection_and_best_on_test_only_on_request(tmp_path):
    """In-training evaluations on the test split (a dataset without val) give `best-on-test` tables only when
    asked, each said to be optimistic and the CUT / UNSB convention; the chosen one is the lowest test FID."""
    records = [record("cyclegan", 0, fid, 0.4, selection="in-training", epoch=e) for e, fid in ((2, 70.0), (4, 55.0))]
    records += [record("cyclegan", 0, 60.0, 0.4, epoch=4), record("cyclegan", 0, 58.0, 0.4, selection="best-on-validation")]
    runs = write_runs(tmp_path / "runs", records)
    report.write_results(tmp_path / "plain", runs, {}, {})
    plain = (tmp_path / "plain" / "results.md").read_text()
    assert "Checkpoint selection: `last`: the weights at the end of training" in plain
    assert "Checkpoint selection: `best-on-validation`: the checkpoint with the lowest mean validation FID" in plain
    assert "best-on-test" not in plain
    report.write_results(tmp_path / "asked", runs, {}, {}, best_on_test=True)
    asked = (tmp_path / "asked" / "results.md").read_text()
    section = last_section(asked, selection="best-on-test")
    assert "OPTIMISTIC" in section and "CUT (Park et al. 2020) and UNSB (Kim et al. 2023)" in section
    assert "| 55 |" in table_rows(section.strip(), "| cyclegan |")[0]  # epoch 4's test FID, the lowest
    summary = json.loads((tmp_path / "asked" / "results.json").read_text())["summary"]
    assert summary["best-on-test"]["A2B"]["cyclegan"]["fid"]["mean"] == 55.0


def test_csv_has_interval_ends_and_results_json_keeps_replicates_only_for_test_records(tmp_path):
    test = record("cyclegan", 0, 50.0, 0.4, intervals={"fid": [46, 54]})
    test["metrics"]["A2B"]["bootstrap_replicates"] = {"fid": "AAAA"}
    training = record("cyclegan", 0, 70.0, 0.4, selection="in-training", epoch=2, intervals={"fid": [60, 80]})
    training["metrics"]["A2B"]["bootstrap_replicates"] = {"fid": "AAAA"}
    runs = write_runs(tmp_path / "runs", [test, training])
    report.write_results(tmp_path / "out", runs, {}, {})
    rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert any(row.endswith("A2B,fid_ci_low,46") for row in rows) and not any("bootstrap" in row for row in rows)
    stored = json.loads((tmp_path / "out" / "results.json").read_text())["records"]
    by_selection = {r["checkpoint"]["selection"]: r["metrics"]["A2B"] for r in stored}
    assert "bootstrap_replicates" in by_selection["last"] and "bootstrap_replicates" not in by_selection["in-training"]


def test_every_header_of_a_written_table_maps_back_to_its_record_key(tmp_path):
    """For readers of results.md (the HTML report): the headers' marks (‡, N, the arrows) do not hide the key."""
    runs = write_runs(tmp_path / "runs", [record("cyclegan", 0, 50.0, 0.4, n=100)])
    report.write_results(tmp_path / "out", runs, {}, {})
    header = table_rows(last_section((tmp_path / "out" / "results.md").read_text()).strip(), "| method |")[0]
    keys = [report.column_key(cell) for cell in header.strip("| ").split(" | ")[1:]]
    assert keys[:3] == ["n_fake", "kid_mean", "fid"] and None not in keys


def test_a_method_without_a_task_of_its_kind_is_named_under_that_table():
    from i2ibench.bench.report import absent_methods

    stats = {"fid": {"mean": 1.0, "std": None, "n": 1}}
    tasks = {"A2B": {"cut": stats, "cyclegan": stats}, "B2A": {"cyclegan": stats},
             "a->b@latent": {"stargan-v2": stats}, "a->b": {"stargan": stats}}
    assert absent_methods(tasks, "B2A") == ["cut (judged on `A2B`)"]
    latent = absent_methods(tasks, "a->b@latent")
    assert len(latent) == 1 and latent[0].startswith("stargan (guided by the target label alone")
    assert absent_methods(tasks, "a->b") == ["stargan-v2 (guided by random latents or reference images: its rows "
                                             "are in the `@latent` tables)"]
    assert absent_methods(tasks, "A2B") == []  # stargan-v2 / stargan are of the other kind: not listed
