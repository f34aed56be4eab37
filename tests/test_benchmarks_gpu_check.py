"""benchmarks/gpu_check.py keeps working without a GPU: its tiny run takes every code path on a CPU.

The GPU check is meant to run once, unattended, on a scarce GPU; these tests make sure that its
tiny run (same code, 32 px) writes every section, and that a hanging, crashing or failing
measurement costs that measurement only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
SECTIONS = ("cyclegan", "flops", "stargan_v2", "inception")


def run_check(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "check.json"
    process = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True,
                             timeout=600, env={**os.environ, "WANDB_MODE": "disabled", **env})
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-2000:]
    return process, json.loads(out.read_text())


@pytest.mark.slow
def test_tiny_check_writes_every_section(tmp_path):
    gpu_json = REPO / "results" / "perf" / "gpu.json"
    before = gpu_json.read_bytes() if gpu_json.is_file() else None
    # Without CUDA and without TINY the check must run its tiny version, say so and exit 0.
    env = {"TINY": "1"} if torch.cuda.is_available() else {"TINY": ""}
    process, doc = run_check(tmp_path, **env)
    if not torch.cuda.is_available():
        assert "no CUDA device: ran the tiny CPU check instead" in process.stdout
    assert doc["complete"] and doc["tiny"]
    assert (gpu_json.read_bytes() if gpu_json.is_file() else None) == before  # the real figures stay untouched

    rows = [row for section in SECTIONS for row in doc[section]["rows"]] + doc["quality"]["runs"]
    assert {row["id"].split("/")[0] for row in rows} == {"cyclegan", "flops", "stargan-v2", "inception", "quality"}
    for row in rows:
        graphs = "cuda-graphs" in row["id"]
        if graphs and not torch.cuda.is_available():
            assert row["status"] == "unavailable" and row["reason"].startswith("CUDA only"), row
        else:
            assert row["status"] == "ok", row
    cyclegan = {row["id"].split("/")[-1]: row for row in doc["cyclegan"]["rows"]}
    assert {"plain-loop", "eager-fp32", "default", "bf16", "channels-last", "fused-adam", "all+compile"} <= set(cyclegan)
    for row in doc["cyclegan"]["rows"] + doc["stargan_v2"]["rows"] + doc["inception"]["rows"]:
        if row["status"] == "ok":
            assert row["images_per_s"] > 0
            if not torch.cuda.is_available():
                assert row["peak_memory_mb"] == "CUDA only"
    assert all(row["flops_per_step"] > 0 for row in doc["flops"]["rows"])
    assert cyclegan["plain-loop"]["achieved_tflops"] > 0  # FLOPs / step time: utilisation needs only a peak
    if not torch.cuda.is_available():
        assert cyclegan["plain-loop"]["mfu"] is None and cyclegan["plain-loop"]["mfu_note"] == "CUDA only"

    quality = doc["quality"]
    assert [len(run["losses"]) for run in quality["runs"]] == [3, 3, 3]
    assert set(quality["fast_minus_fp32"]) >= {"train/gen_total", "train/disc_A"}
    assert (tmp_path / "check-quality.png").is_file()


@pytest.mark.slow
def test_a_hang_a_crash_and_an_error_cost_one_measurement_each(tmp_path):
    faults = {"flops": "hang", "inception/b1$": "exit", "inception/b2$": "raise"}
    process, doc = run_check(tmp_path, "--tiny", "--cap-s", "10", "--only", "flops|inception|stargan-v2/b2/bf16",
                             I2IBENCH_GPU_CHECK_FAULTS=json.dumps(faults))
    status = {row["id"]: row for section in SECTIONS for row in doc[section]["rows"]}
    assert "10" in status["flops/b2"]["error"] and "timed out" in status["flops/b2"]["error"]  # killed at its cap
    assert "worker process died" in status["inception/b1"]["error"]  # a fresh worker took over
    assert "injected fault" in status["inception/b2"]["error"]  # the exception, as a string
    assert status["stargan-v2/b2/bf16"]["status"] == "ok"  # and the rest was still measured
    assert doc["complete"]
