"""`i2ibench bench` end to end on a tiny protocol: tables, W&B grouping, kill and resume, skip when done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import inception_weights

WEIGHTS = inception_weights()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(WEIGHTS is None, reason="no Inception weights (set I2IBENCH_INCEPTION_WEIGHTS)")]

TINY_PROTOCOL = {
    "protocol": "tiny", "seeds": [0], "image_size": 32,
    "args": {"data.eval_batch_size": 8, "data.num_workers": 0, "trainer.limit_train_batches": 3,
             "trainer.check_val_every_n_epoch": 1, "trainer.num_sanity_val_steps": 0,
             "trainer.enable_progress_bar": False, "evaluation.kid_subsets": 5, "evaluation.lpips": "off"},
    "methods": {"cyclegan": {"model.init_args.generator_args.ngf": 8, "model.init_args.generator_args.n_blocks": 1,
                             "model.init_args.discriminator_args.ndf": 8, "model.init_args.n_epochs": 1,
                             "model.init_args.n_epochs_decay": 2, "trainer.max_epochs": 3}},
}


def small_dataset(root: Path, builtin_root: Path) -> Path:
    for folder, count in (("trainA", 4), ("trainB", 4), ("valA", 4), ("valB", 4), ("testA", 6), ("testB", 6)):
        (root / folder).mkdir(parents=True)
        for src in sorted((builtin_root / folder).iterdir())[:count]:
            os.symlink(src, root / folder / src.name)
    return root


def bench_command(tmp_path: Path, data: Path, protocol: Path) -> list[str]:
    return [sys.executable, "-m", "i2ibench", "bench", "--dataset", str(data), "--protocol", str(protocol),
            "--methods", "cyclegan", "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")]


def test_bench_survives_a_kill_resumes_and_skips_finished_runs(tmp_path, builtin_root):
    data = small_dataset(tmp_path / "toyset", builtin_root)
    protocol = tmp_path / "tiny.yaml"
    protocol.write_text(yaml.safe_dump(TINY_PROTOCOL))
    env = {**os.environ, "I2IBENCH_INCEPTION_WEIGHTS": str(WEIGHTS), "WANDB_MODE": "offline"}
    run_root = tmp_path / "runs" / "toyset" / "tiny" / "cyclegan" / "seed0"

    # Kill the bench as soon as the run has its first checkpoint ...
    first = subprocess.Popen(bench_command(tmp_path, data, protocol), cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (run_root / "checkpoints" / "last.ckpt").is_file():
        assert first.poll() is None, "the bench ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (run_root / "done.json").exists()

    # ... then run it again: it resumes from the checkpoint and finishes.
    second = subprocess.run(bench_command(tmp_path, data, protocol), cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming" in second.stdout and "finished" in second.stdout
    done = json.loads((run_root / "done.json").read_text())
    assert set(done["records"]) == {"last", "best-on-validation"}
    last = json.loads(Path(done["records"]["last"]).read_text())
    assert last["epoch"] == 3 and last["dataset"]["split"] == "test" and last["method"] == "cyclegan"
    best = json.loads(Path(done["records"]["best-on-validation"]).read_text())
    in_training = [json.loads(p.read_text()) for p in (run_root / "eval").glob("val-in-training-*.json")]
    assert sorted(r["epoch"] for r in in_training) == [1, 2, 3]  # epochs completed when evaluated
    best_val = min(in_training, key=lambda r: sum(t["fid"] for t in r["metrics"].values()))
    assert (best["epoch"], best["step"]) == (best_val["epoch"], best_val["step"])  # chosen on val, not on test

    out = tmp_path / "results" / "toyset" / "tiny"
    table = (out / "results.md").read_text()
    assert "| cyclegan |" in table and "FID‡ ↓" in table and "SSIM(gt) ↑" in table  # ‡: 6 test images, < 2048
    # The reference rows, under the runs' own protocol card (no †), computed on the first attempt
    assert "| *copy-input* (reference) |" in table and "| *real-target* (reference) |" in table
    reference_records = sorted((tmp_path / "runs" / "toyset" / "tiny" / "_reference").glob("*/eval/*.json"))
    assert [p.name for p in reference_records] == ["test-copy-input.json", "test-real-target.json"]
    assert "last checkpoint" in table and "best-on-validation checkpoint" in table
    # The run's wall time: the attempt that finished (the killed bench could not time its own run)
    timed = json.loads((run_root / "wall-time.json").read_text())
    assert timed["run"] == "cyclegan" and timed["seed"] == 0 and len(timed["attempts_s"]) == 1
    assert 0 < timed["attempts_s"][0] < 600
    assert "## Time" in table and " | cyclegan | 0 |" in table and "| **all runs** |" in table
    assert (out / "samples.png").is_file() and (out / "plots" / "fid.png").is_file()
    assert "wandb sync" in second.stdout
    # The killed attempt's W&B file may be cut short by SIGKILL; the attempt that finished carries the group.
    wandb_files = sorted(run_root.glob("wandb/offline-run-*/run-*.wandb"), key=lambda f: f.stat().st_mtime)
    assert wandb_files and b"toyset/tiny" in wandb_files[-1].read_bytes()

    # A third time: nothing left to do; the tables are rebuilt from the records.
    records_before = sorted((run_root / "eval").iterdir())
    third = subprocess.run(bench_command(tmp_path, data, protocol), cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
    assert third.returncode == 0 and "done earlier, skipped" in third.stdout
    assert "reference rows: done earlier, skipped" in third.stdout
    assert sorted((run_root / "eval").iterdir()) == records_before
    assert json.loads((run_root / "wall-time.json").read_text())["attempts_s"] == timed["attempts_s"]  # not run


def test_methods_that_do_not_fit_the_dataset_are_skipped_with_a_reason(tmp_path, builtin_root):
    from i2ibench.bench.runner import not_applicable
    from i2ibench.data.folders import detect_layout
    from i2ibench.registry import MethodSpec

    layout = detect_layout(builtin_root)
    mask_method = MethodSpec("mask-method", object, "needs masks", "x.yaml", dataset_mode="mask")
    assert "masks" in not_applicable(mask_method, layout)
    assert not_applicable(MethodSpec("c", object, "", "c.yaml"), layout) is None


def test_a_paired_method_is_skipped_on_unpaired_training_data_and_runs_on_pairs(tmp_path, builtin_root):
    import shutil

    from i2ibench.bench.runner import not_applicable
    from i2ibench.data.folders import detect_layout
    from i2ibench.registry import MethodSpec

    paired_method = MethodSpec("p", object, "", "p.yaml", dataset_mode="paired")
    reason = not_applicable(paired_method, detect_layout(builtin_root))  # train crops named per domain
    assert "needs paired training data" in reason and "photo_0000" in reason
    paired = tmp_path / "paired"
    for split in ("train", "test"):
        for domain in ("A", "B"):  # the built-in test split is paired: same names, a photo and its sketch
            shutil.copytree(builtin_root / f"test{domain}", paired / f"{split}{domain}")
    assert not_applicable(paired_method, detect_layout(paired)) is None


def three_domain_dataset(root: Path, builtin_root: Path) -> Path:
    """train/<d>/ and test/<d>/ for three domains (StarGAN v2's layout), 4 + 4 tiny images each."""
    for domain, source in (("photo", "testA"), ("sketch", "testB"), ("other", "trainA")):
        for split, files in (("train", slice(0, 4)), ("test", slice(4, 8))):
            (root / split / domain).mkdir(parents=True)
            for src in sorted((builtin_root / source).iterdir())[files]:
                os.symlink(src, root / split / domain / src.name)
    return root


def test_two_domain_methods_run_per_pair_only_by_default_or_when_named(tmp_path, builtin_root):
    from i2ibench.bench.runner import PER_PAIR_BY_DEFAULT, plan

    data = three_domain_dataset(tmp_path / "three", builtin_root)
    _, runs, skipped = plan(str(data), TINY_PROTOCOL, None, None, tmp_path / "runs")
    assert "cyclegan" in skipped and "--methods" in skipped["cyclegan"]
    per_pair = [run for run in runs if run.pair]
    assert {run.name for run in per_pair} <= set(PER_PAIR_BY_DEFAULT)
    _, runs, skipped = plan(str(data), TINY_PROTOCOL, ["cyclegan"], None, tmp_path / "runs")
    assert [run.pair for run in runs] == [("other", "photo"), ("other", "sketch"), ("photo", "sketch")]
    view = Path(runs[0].dataset)
    assert (view / "trainA").resolve() == (data / "train" / "other").resolve()
    assert (view / "testB").resolve() == (data / "test" / "photo").resolve()


def test_per_pair_training_on_a_three_domain_folder_yields_every_task(tmp_path, builtin_root):
    data = three_domain_dataset(tmp_path / "three", builtin_root)
    protocol = dict(TINY_PROTOCOL, protocol="pairs")
    protocol["methods"] = {"cyclegan": {**TINY_PROTOCOL["methods"]["cyclegan"], "trainer.max_epochs": 1,
                                        "model.init_args.n_epochs_decay": 0}}
    path = tmp_path / "pairs.yaml"
    path.write_text(yaml.safe_dump(protocol))
    env = {**os.environ, "I2IBENCH_INCEPTION_WEIGHTS": str(WEIGHTS), "WANDB_MODE": "offline"}
    result = subprocess.run(bench_command(tmp_path, data, path), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "three" / "pairs" / "cyclegan").glob("*/seed0/eval/test-*.json")]
    tasks = {task for record in records for task in record["metrics"]}
    domains = ("other", "photo", "sketch")
    assert tasks == {f"{s}->{t}" for s in domains for t in domains if s != t}
    table = (tmp_path / "results" / "three" / "pairs" / "results.md").read_text()
    assert all(f"{s}->{t}" in table for s in domains for t in domains if s != t)
    assert {record["dataset"]["name"] for record in records} == {str(data)}  # the dataset, not a pair's view
    assert table.startswith(f"# {data} ")


def test_builtin_benches_its_default_set_and_names_why_the_others_are_left_out(tmp_path):
    from i2ibench.bench.runner import default_methods, plan
    from i2ibench.registry import METHODS

    chosen = default_methods("builtin")
    assert chosen and set(chosen) < set(METHODS.names())
    smoke = yaml.safe_load((Path(__file__).parents[1] / "configs" / "bench" / "smoke.yaml").read_text())
    _, runs, skipped = plan("builtin", smoke, None, None, tmp_path / "runs")
    assert sorted({run.name for run in runs}) == sorted(chosen)
    assert "default set" in skipped["munit"] and "--methods munit" in skipped["munit"]
    assert "paired" in skipped["pix2pix"]  # not applicable says why first
    _, runs, _ = plan("builtin", smoke, ["munit"], None, tmp_path / "runs")  # named: it runs
    assert [run.name for run in runs] == ["munit"]
    assert default_methods(str(tmp_path)) is None  # a folder: every applicable method


def test_a_protocol_names_its_own_default_set_before_the_dataset_does(tmp_path):
    from i2ibench.bench.runner import plan

    protocol = {"protocol": "longer", "seeds": [0], "default_methods": ["cyclegan", "cut"]}
    _, runs, skipped = plan("builtin", protocol, None, None, tmp_path / "runs")
    assert sorted(run.name for run in runs) == ["cut", "cyclegan"]
    assert "longer protocol's default set" in skipped["stargan-v2"] and "--methods stargan-v2" in skipped["stargan-v2"]
    _, runs, _ = plan("builtin", protocol, ["fastcut"], None, tmp_path / "runs")  # named: it runs
    assert [run.name for run in runs] == ["fastcut"]
    with pytest.raises(Exception, match="cyclegann"):
        plan("builtin", {**protocol, "default_methods": ["cyclegann"]}, None, None, tmp_path / "runs")
