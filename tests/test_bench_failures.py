"""A bench run that diverges is a failed row with its reason, not a crash and not a normal-looking number.

The real bench, end to end: an ablation over the learning rate whose first value (1e30) blows up
at its first steps and whose second trains. The training guard stops that run with
NonFiniteLossError; run_one records the reason in `failed.json` and exits 1; the runner keeps
going, writes the tables with the finished row's numbers and the failed row's reason, and exits 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import inception_weights

WEIGHTS = inception_weights()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(WEIGHTS is None, reason="no Inception weights (set I2IBENCH_INCEPTION_WEIGHTS)")]

PROTOCOL = {
    "protocol": "tiny", "seeds": [0], "image_size": 32,
    "args": {"data.eval_batch_size": 8, "data.num_workers": 0, "trainer.limit_train_batches": 3,
             "trainer.max_epochs": 1, "trainer.num_sanity_val_steps": 0, "trainer.enable_progress_bar": False,
             "evaluation.kid_subsets": 2, "evaluation.lpips": "off", "wandb.enabled": False,
             "model.init_args.generator_args.ngf": 4, "model.init_args.generator_args.n_blocks": 1,
             "model.init_args.discriminator_args.ndf": 4, "model.init_args.n_epochs": 1,
             "model.init_args.n_epochs_decay": 0},
}


def small_dataset(root: Path, builtin_root: Path) -> Path:
    for folder in ("trainA", "trainB", "testA", "testB"):
        (root / folder).mkdir(parents=True)
        for src in sorted((builtin_root / folder).iterdir())[:4]:
            os.symlink(src, root / folder / src.name)
    return root


def test_a_diverging_run_is_a_failed_row_with_its_reason_and_the_bench_goes_on(tmp_path, builtin_root):
    data = small_dataset(tmp_path / "toyset", builtin_root)
    protocol = tmp_path / "tiny.yaml"
    protocol.write_text(yaml.safe_dump(PROTOCOL))
    sweep = tmp_path / "lr.yaml"
    sweep.write_text(yaml.safe_dump({"ablation": "lr", "method": "cyclegan", "parameter": "model.init_args.lr",
                                     "values": [1e30, 2e-4], "dataset": str(data), "protocol": str(protocol)}))
    env = {**os.environ, "I2IBENCH_INCEPTION_WEIGHTS": str(WEIGHTS), "WANDB_MODE": "offline"}
    result = subprocess.run([sys.executable, "-m", "i2ibench", "bench", "--ablation", str(sweep),
                             "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 1, log[-4000:]  # a run failed: non-zero, after the tables were written

    good, bad = "cyclegan[lr=0.0002]", "cyclegan[lr=1e+30]"
    bad_root = tmp_path / "runs" / "toyset" / "tiny" / "ablation-lr" / "lr=1e+30" / "seed0"
    failure = json.loads((bad_root / "failed.json").read_text())
    assert failure["error"] == "NonFiniteLossError" and failure["reason"].startswith("non-finite loss at step ")
    assert not (bad_root / "done.json").exists()
    assert not list((bad_root / "eval").glob("*.json"))  # nothing was scored
    assert f"{bad} seed 0: failed after" in result.stdout and f"{good} seed 0: finished" in result.stdout
    assert "i2ibench: error: non-finite loss at step " in result.stderr

    out = tmp_path / "results" / "toyset" / "ablation-lr"
    table = (out / "results.md").read_text().splitlines()
    failed_rows = [line for line in table if line.startswith(f"| {bad} |")]
    assert failed_rows == [f"| {bad} | 0 | failed: {failure['reason']} |"]  # the reason, and no numbers
    good_row = next(line for line in table if line.startswith(f"| {good} |"))
    assert any(char.isdigit() for char in good_row.split("|")[2])  # the finished row has its FID
    results = json.loads((out / "results.json").read_text())
    assert results["failed"] == {bad: {"0": failure["reason"]}}
    assert set(results["summary"]["last"]["A2B"]) == {good}
