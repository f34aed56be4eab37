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
           epoch: int = 3) -> dict:
    return {"schema": "i2ibench.eval/1", "dataset": {"name": "toy", "split": "test"}, "method": method, "seed": seed,
            "epoch": epoch, "step": 10 * epoch, "checkpoint": {"selection": selection, "path": None},
            "protocol": card or CARD,
            "metrics": {"A2B": {"n_real": 5, "n_fake": 5, "fid": fid, "kid_mean": fid / 1000, "ssim_gt": ssim,
                                "psnr_gt": "inf", "lpips_gt": None, "is_mean": None}},
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
    assert "FID ↓" in table and "SSIM(gt) ↑" in table
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
    runs = write_runs(tmp_path / "runs", [record("cyclegan", 0, 50.0, 0.40), record("ssim-lsgan", 0, 60.0, 0.50),
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
    assert "**50**" in table_rows(last.strip(), "| cyclegan |")[0]  # best FID among the methods, not 5
    assert "**0.5**" in table_rows(last.strip(), "| ssim-lsgan |")[0]  # best SSIM among the methods, not 0.9
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
