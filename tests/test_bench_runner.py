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
    assert "| cyclegan |" in table and "FID ↓" in table and "SSIM(gt) ↑" in table
    # The reference rows, under the runs' own protocol card (no †), computed on the first attempt
    assert "| *copy-input* (reference) |" in table and "| *real-target* (reference) |" in table
    reference_records = sorted((tmp_path / "runs" / "toyset" / "tiny" / "_reference").glob("*/eval/*.json"))
    assert [p.name for p in reference_records] == ["test-copy-input.json", "test-real-target.json"]
    assert "last checkpoint" in table and "best-on-validation checkpoint" in table
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
