"""Metric options out of range are errors (one line naming the option, exit status 2), never NaN,
a silent default or a traceback: on `i2ibench eval` and on the EvaluationCallback (`--evaluation.*`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from i2ibench.errors import ConfigError
from i2ibench.metrics.folder_eval import main as eval_main
from i2ibench.metrics.suite import DistributionSettings


def two_images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(folder / f"{i}.png")
    return folder


def run_i2ibench(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "i2ibench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line]


def test_eval_rejects_a_kid_subset_of_one_image_in_a_subprocess(tmp_path):
    """Before: NaN KID and exit status 0."""
    folder = two_images(tmp_path / "images")
    result = run_i2ibench(["eval", "--real", str(folder), "--fake", str(folder), "--kid-subset-size", "1"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert "--kid-subset-size" in line and ">= 2" in line and "got 1" in line


BAD_EVAL_OPTIONS = [
    (["--kid-subset-size", "0"], "--kid-subset-size", ">= 2"),   # before: silently 1000
    (["--kid-subset-size", "-5"], "--kid-subset-size", ">= 2"),  # before: a traceback
    (["--kid-subsets", "0"], "--kid-subsets", ">= 1"),           # before: NaN
    (["--kid-subsets", "-1"], "--kid-subsets", ">= 1"),
    (["--is-splits", "0"], "--is-splits", ">= 1"),               # before: IS NaN
    (["--seed", "-1"], "--seed", "from 0 to"),                   # before: a numpy traceback
    (["--batch-size", "0"], "--batch-size", ">= 1"),
]


@pytest.mark.parametrize("option, name, valid", BAD_EVAL_OPTIONS, ids=[" ".join(o[0]) for o in BAD_EVAL_OPTIONS])
def test_eval_rejects_each_bad_option(tmp_path, capsys, option, name, valid):
    """The same parser as the subprocess above, in process (a Python start costs ~15 s on the CI machine)."""
    folder = two_images(tmp_path / "images")
    with pytest.raises(SystemExit) as exit_info:
        eval_main(["--real", str(folder), "--fake", str(folder), *option])
    assert exit_info.value.code == 2
    [line] = error_lines(capsys.readouterr().err)
    assert name in line and valid in line and f"got {option[1]}" in line


@pytest.mark.parametrize("settings, name", [
    ({"kid_subset_size": 1}, "kid_subset_size"), ({"kid_subsets": 0}, "kid_subsets"), ({"is_splits": 0}, "is_splits"),
    ({"prc_neighborhood": 0}, "prc_neighborhood"), ({"mmd_bandwidth_samples": 1}, "mmd_bandwidth_samples"),
    ({"seed": 2**32}, "seed"), ({"kid_subsets": 2.5}, "kid_subsets"),
])
def test_distribution_settings_reject_values_out_of_range(settings, name):
    """Every path that builds the settings (eval, the EvaluationCallback, the bench) is covered."""
    with pytest.raises(ConfigError, match=name):
        DistributionSettings(**settings)


def test_evaluation_callback_option_is_an_error_before_training(tmp_path, builtin_root):
    """`--evaluation.kid_subsets 0` through the LightningCLI: one line, exit status 2, nothing trained."""
    result = run_i2ibench(["fit", "--method", "cyclegan", "--data.dataset", str(builtin_root),
                           "--evaluation.kid_subsets", "0", "--trainer.default_root_dir", str(tmp_path / "run")],
                          tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert "kid_subsets" in line and ">= 1" in line and "got 0" in line
    assert not (tmp_path / "run" / "checkpoints").exists()
