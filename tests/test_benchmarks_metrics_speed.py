"""benchmarks/metrics_speed.py keeps working: a tiny run times every side in its own process, prints
the ratio against torch-fidelity and writes the figures the README quotes, with FID and KID equal to
torch-fidelity's within 1e-4 relative (the script itself exits non-zero otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import inception_weights

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "metrics_speed.py"


@pytest.mark.slow
@pytest.mark.skipif(inception_weights() is None, reason="no offline Inception weights (../shared/weights)")
def test_tiny_run_prints_the_ratio_and_writes_every_figure(tmp_path):
    out = tmp_path / "speed.json"
    env = {**os.environ, "I2IBENCH_INCEPTION_WEIGHTS": str(inception_weights())}
    process = subprocess.run([sys.executable, str(SCRIPT), "--n", "8", "--size", "64", "--batch", "4",
                              "--repeats", "1", "--out", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-2000:]
    assert "suite / torch-fidelity per repeat:" in process.stdout
    doc = json.loads(out.read_text())
    assert set(doc["seconds"]) == {"torch_fidelity", "torch_fidelity_policy", "suite", "suite_cached_real"}
    assert all(len(times) == 1 and times[0] > 0 for times in doc["seconds"].values())
    assert doc["ratio_to_torch_fidelity"]["torch_fidelity"] == 1.0
    assert 0 < doc["ratio_suite_to_torch_fidelity_same_allocator"]
    assert max(doc["max_rel_diff_to_torch_fidelity"].values()) <= 1e-4
    for name in ("fid", "kid_mean", "kernel_mmd2", "precision", "recall", "ssim_gt", "psnr_gt"):
        assert name in doc["setup"]["suite_metrics"], name
    assert all(s > 0 for s in doc["evaluation_callback_s_per_image"].values())
