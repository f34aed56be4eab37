"""The EvaluationCallback end to end: records, cache, unavailable IS, and 1 vs 2 DDP processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from conftest import inception_weights, tiny_cyclegan, tiny_datamodule
from test_methods_cyclegan import cpu_trainer, run_cli

WEIGHTS = inception_weights()
pytestmark = pytest.mark.skipif(WEIGHTS is None, reason="no Inception weights (set I2IBENCH_INCEPTION_WEIGHTS)")

TINY_MODEL = ["--model.init_args.generator_args.ngf", "8", "--model.init_args.generator_args.n_blocks", "1",
              "--model.init_args.discriminator_args.ndf", "8"]


def odd_dataset(root: Path, builtin_root: Path, n_test: int = 7) -> Path:
    """A small paired set with an odd number of test images (links to the built-in files)."""
    for folder, count in (("trainA", 4), ("trainB", 4), ("testA", n_test), ("testB", n_test)):
        (root / folder).mkdir(parents=True)
        for src in sorted((builtin_root / folder).iterdir())[:count]:
            os.symlink(src, root / folder / src.name)
    return root


def read_test_record(tmp_path: Path, run: str) -> dict:
    paths = sorted((tmp_path / run / "eval").glob("test-last-*.json"))
    assert len(paths) == 1, paths
    return json.loads(paths[0].read_text())


def weights_with_random_classifier(path: Path) -> Path:
    """The shared Inception weights with a seeded random classifier (theirs is all zeros), so that
    IS is computed, and its splits synced, under DDP."""
    state = torch.load(WEIGHTS, weights_only=True)
    generator = torch.Generator().manual_seed(0)
    state["fc.weight"] = torch.randn(state["fc.weight"].shape, generator=generator) * 0.1
    state["fc.bias"] = torch.randn(state["fc.bias"].shape, generator=generator) * 0.1
    torch.save(state, path)
    return path


@pytest.mark.slow
def test_two_ddp_processes_give_the_same_numbers_as_one(tmp_path, builtin_root, monkeypatch):
    """Every number, IS and KID included, equal on 1 and 2 processes.

    Built to fail on ordering and sync bugs: KID subsets of 4 of the 7 images (which images land
    in a subset depends on the dataset order being restored after the gather), IS in 3 unequal
    splits (each image's split follows its index; the split sums are all-reduced), and each run
    extracts its own real features (separate caches), so the 2-process gather is compared too.
    """
    data = odd_dataset(tmp_path / "data", builtin_root)
    weights = weights_with_random_classifier(tmp_path / "inception-random-classifier.pth")
    pl.seed_everything(0)
    trainer = cpu_trainer(tmp_path / "fit", max_epochs=1, limit_train_batches=2)
    trainer.fit(tiny_cyclegan(), tiny_datamodule(data))
    checkpoint = tmp_path / "tiny.ckpt"
    trainer.save_checkpoint(checkpoint)

    common = ["test", "--method", "cyclegan", *TINY_MODEL, "--data.dataset", str(data), "--data.load_size", "36",
              "--data.crop_size", "32", "--data.num_workers", "0", "--data.eval_batch_size", "2",
              "--ckpt_path", str(checkpoint), "--evaluation.lpips", "random-alex", "--evaluation.kid_subsets", "10",
              "--evaluation.kid_subset_size", "4", "--evaluation.is_splits", "3",
              "--evaluation.weights", str(weights), "--wandb.enabled", "false",
              "--trainer.enable_progress_bar", "false"]
    for run, extra in (("two", ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]),
                       ("one", [])):
        monkeypatch.setenv("I2IBENCH_HOME", str(tmp_path / f"home-{run}"))  # no shared feature cache
        run_cli(common + ["--trainer.default_root_dir", str(tmp_path / run), *extra], cwd=tmp_path)
    two, one = read_test_record(tmp_path, "two"), read_test_record(tmp_path, "one")

    assert two["timings"]["world_size"] == 2 and one["timings"]["world_size"] == 1
    assert two["timings"]["real_features_cached"] == one["timings"]["real_features_cached"] == {"A": False, "B": False}
    for task in ("A2B", "B2A"):
        ours = one["metrics"][task]
        assert ours["n_fake"] == two["metrics"][task]["n_fake"] == 7  # nothing padded or dropped
        assert ours["kid_subset_size"] == 4 and ours["kid_std"] > 0  # subsets smaller than N, and different
        assert "is" not in one["unavailable"][task] and ours["is_mean"] > 1.0 and ours["is_std"] > 0
        compared = [name for name, value in ours.items() if isinstance(value, float)]
        assert {"fid", "kid_mean", "kid_std", "is_mean", "is_std", "kernel_mmd2", "precision", "recall",
                "ssim_gt", "psnr_gt", "lpips_gt"} <= set(compared)
        for name in compared:
            # Inception runs in float32 on batches that differ between the runs (1e-7 relative). A std
            # is a small difference of such values, so it is held to 1e-6 of its mean, not of itself.
            scale = abs(ours[name.replace("_std", "_mean")]) if name.endswith("_std") else abs(ours[name])
            assert two["metrics"][task][name] == pytest.approx(ours[name], abs=1e-6 * scale + 1e-12), (task, name)
        assert ours["lpips_gt"] is not None  # random backbone: plumbing only, and said so
    assert "RANDOM backbone" in one["protocol"]["lpips"]
    assert one["protocol"]["weights_sha256"] == two["protocol"]["weights_sha256"]
    assert one["checkpoint"]["selection"] == "last" and one["dataset"]["paired"] is True


@pytest.mark.slow
def test_in_training_evaluation_writes_records_and_reuses_real_features(tmp_path, builtin_root):
    from i2ibench.metrics.callback import EvaluationCallback

    data = odd_dataset(tmp_path / "data", builtin_root, n_test=5)
    callback = EvaluationCallback(method="cyclegan", weights=str(WEIGHTS), lpips="off", kid_subsets=5)
    trainer = cpu_trainer(tmp_path / "run", max_epochs=2, limit_train_batches=1, limit_val_batches=None,
                          callbacks=[callback])
    trainer.fit(tiny_cyclegan(), tiny_datamodule(data))
    records = [json.loads(p.read_text()) for p in callback.records]
    assert [r["epoch"] for r in records] == [1, 2]  # epochs completed
    assert all(r["checkpoint"]["selection"] == "in-training" and r["dataset"]["split"] == "test" for r in records)
    assert records[0]["timings"]["real_features_cached"] == {"A": False, "B": False}
    assert records[1]["timings"]["real_features_cached"] == {"A": True, "B": True}
    assert records[0]["metrics"]["A2B"]["fid"] != records[1]["metrics"]["A2B"]["fid"]  # the model changed
    assert "test/A2B/fid" in trainer.callback_metrics
