"""Reference rows (`copy-input`, `real-target`) computed by the bench from the data alone, checked
against an independent path: `i2ibench eval` (`evaluate_folders`) on the same folders, whose own
numbers tests/test_metrics_reference.py checks against torch-fidelity."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import inception_weights
from i2ibench.bench import reference_rows, runner
from i2ibench.metrics.folder_eval import evaluate_folders
from i2ibench.metrics.suite import DistributionSettings

WEIGHTS = inception_weights()
needs_inception = pytest.mark.skipif(WEIGHTS is None, reason="no Inception weights (set I2IBENCH_INCEPTION_WEIGHTS)")

PROTOCOL = {"protocol": "tiny", "seeds": [0], "image_size": 32,
            "args": {"data.eval_batch_size": 4, "data.num_workers": 0, "evaluation.kid_subsets": 5,
                     "evaluation.lpips": "off", "trainer.accelerator": "cpu", "wandb.enabled": False}}
COUNTS = {"trainA": 8, "trainB": 8, "testA": 6, "testB": 6}


def small_dataset(root: Path, builtin_root: Path) -> Path:
    for folder, count in COUNTS.items():
        (root / folder).mkdir(parents=True)
        for src in sorted((builtin_root / folder).iterdir())[:count]:
            os.symlink(src, root / folder / src.name)
    return root


def test_tasks_cover_every_method_family_and_share_computations():
    assert reference_rows.reference_tasks(("A", "B"), {"two-domain"}) == ["A2B", "B2A"]
    tasks = reference_rows.reference_tasks(("cat", "dog", "fox"), {"multi-domain"})
    assert len(tasks) == 12 and "cat->fox@reference" in tasks and "cat->fox" not in tasks and "A2B" not in tasks
    # latent- and reference-guided tasks of one pair have one copy-input: the same sources and real set
    groups = reference_rows.fan_out(tasks, lambda t: t.split("@")[0])
    assert len(groups) == 6 and groups["cat->dog@latent"] == ["cat->dog@latent", "cat->dog@reference"]
    # label-guided methods (StarGAN) are judged on `s->t` alone: no rows of tasks they are not judged on
    labels = reference_rows.reference_tasks(("cat", "dog", "fox"), {"label"})
    assert sorted(labels) == sorted(f"{s}->{t}" for s in ("cat", "dog", "fox") for t in ("cat", "dog", "fox") if s != t)


def test_the_family_comes_from_the_methods_class(tmp_path):
    from types import SimpleNamespace

    from i2ibench.data.folders import Layout

    multi = Layout("multi-domain", tmp_path, ("cat", "dog", "fox"))
    config = lambda path, mode="auto": SimpleNamespace(data=SimpleNamespace(mode=mode),  # noqa: E731
                                                       model=SimpleNamespace(class_path=path))
    assert reference_rows.task_family(config("i2ibench.methods.stargan.StarGAN"), multi) == "label"
    assert reference_rows.task_family(config("i2ibench.methods.stargan_v2.StarGANv2"), multi) == "multi-domain"
    assert reference_rows.task_family(config("i2ibench.methods.munit.MUNIT", "multi-domain"), multi) == "multi-domain"
    assert reference_rows.task_family(config("i2ibench.methods.cyclegan.CycleGAN", "unaligned"), multi) == "two-domain"
    two = Layout("two-domain", tmp_path, ("A", "B"))  # multimodal methods on two domains: A->B@latent, ...
    assert reference_rows.task_family(config("i2ibench.methods.bicyclegan.BicycleGAN", "paired"), two) == "multi-domain"
    assert reference_rows.task_family(config("i2ibench.methods.lsragan.LSRAGAN", "paired"), two) == "multi-domain"
    assert reference_rows.task_family(config("i2ibench.methods.drit.DRIT", "unaligned"), two) == "multi-domain"
    assert reference_rows.task_family(config("i2ibench.methods.cyclegan.CycleGAN", "auto"), two) == "two-domain"


@pytest.mark.slow
@needs_inception
def test_reference_rows_match_independent_evaluations_and_are_computed_once(tmp_path, builtin_root, monkeypatch):
    monkeypatch.setenv("I2IBENCH_INCEPTION_WEIGHTS", str(WEIGHTS))
    data = small_dataset(tmp_path / "toyset", builtin_root)
    layout, runs, _ = runner.plan(str(data), PROTOCOL, ["cyclegan"], None, tmp_path / "runs")
    arguments = runner.reference_arguments(runs, str(data), PROTOCOL, layout, [])
    reference_dir = tmp_path / "runs" / "toyset" / "tiny" / reference_rows.FOLDER
    folders, failure = reference_rows.ensure(arguments, reference_dir)
    assert failure is None and len(folders) == 1
    copy = json.loads((folders[0] / "eval" / "test-copy-input.json").read_text())
    real = json.loads((folders[0] / "eval" / "test-real-target.json").read_text())
    assert copy["checkpoint"]["selection"] == real["checkpoint"]["selection"] == "reference"
    assert copy["protocol"] == real["protocol"] and copy["protocol"]["image_size"] == 32
    assert copy["protocol"]["kid_subsets"] == 5  # the protocol's metric settings, as a method's run gets them

    # copy-input A2B = `i2ibench eval --real testB --fake testA --gt testB`: another loader, another code path.
    settings = DistributionSettings(kid_subsets=5)
    folder_record = evaluate_folders(data / "testB", data / "testA", source=data / "testA", gt=data / "testB",
                                     settings=settings, weights=str(WEIGHTS), lpips="off")
    expected = folder_record["metrics"]["images"]
    a2b = copy["metrics"]["A2B"]
    for name in ("fid", "kid_mean", "kernel_mmd2", "precision", "recall", "ssim_gt", "psnr_gt"):
        assert a2b[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-9), name
    assert a2b["ssim_source"] == 1.0 and a2b["psnr_source"] == "inf"  # the source is its own translation
    assert a2b["n_fake"] == COUNTS["testA"] and a2b["n_real"] == COUNTS["testB"]

    # real-target B2A: trainA images, as many as testB (a method's B2A translations), sampled by the metric seed
    b2a = real["metrics"]["B2A"]
    pool = sorted((data / "trainA").iterdir())
    picks = np.random.RandomState(settings.seed).choice(len(pool), COUNTS["testB"], replace=False)
    sample = tmp_path / "sample"
    sample.mkdir()
    for i in picks:
        os.symlink(pool[i].resolve(), sample / pool[i].name)
    held_out = evaluate_folders(data / "testA", sample, settings=settings, weights=str(WEIGHTS), lpips="off")
    assert b2a["fid"] == pytest.approx(held_out["metrics"]["images"]["fid"], rel=1e-5)
    assert b2a["n_fake"] == COUNTS["testB"]
    assert b2a["fid"] < copy["metrics"]["B2A"]["fid"]  # real images of the target beat the untranslated sources
    assert "ssim_gt" not in b2a and "undefined for real-target" in real["unavailable"]["B2A"]["ssim_gt"]

    # A second bench finds them: nothing is recomputed, the records are untouched.
    before = {p: p.stat().st_mtime_ns for p in (folders[0] / "eval").iterdir()}
    again, failure = reference_rows.ensure(arguments, reference_dir)
    assert failure is None and again == folders
    assert {p: p.stat().st_mtime_ns for p in (folders[0] / "eval").iterdir()} == before
