"""Mistakes a user makes end with one line naming the option or file and the fix, exit status 2, no traceback.

The first tests run the real command (`python -m i2ibench`) in a subprocess: LightningCLI builds the
datamodule inside jsonargparse, and the error must come out of it unwrapped. The others call the
same `main()` in-process (the command's code path, without the start-up cost of a new process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


TINY = ["--model.init_args.generator_args.ngf", "8", "--model.init_args.generator_args.n_blocks", "1",
        "--model.init_args.discriminator_args.ndf", "8", "--data.load_size", "36", "--data.crop_size", "32",
        "--data.num_workers", "0", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
        "--trainer.enable_progress_bar", "false", "--wandb.enabled", "false"]


def command(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "i2ibench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def one_error_line(stderr: str) -> str:
    """The `i2ibench: error:` line; there is exactly one, and no traceback anywhere."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("i2ibench: error: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def small_set(root: Path, truncate: str | None = None) -> Path:
    for folder in ("trainA", "trainB", "testA", "testB"):
        (root / folder).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 40), (60 * i, 90, 200)).save(root / folder / f"{i}.png")
    if truncate:
        bad = root / truncate
        bad.write_bytes(bad.read_bytes()[:60])
    return root


def test_a_negative_crop_size_from_lightningcli(tmp_path):
    result = command(["fit", "--method", "cyclegan", "--data.crop_size", "-4",
                      "--trainer.default_root_dir", str(tmp_path / "run")], tmp_path)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "data.crop_size must be a positive integer, got -4; set --data.crop_size" in line


def test_bench_with_an_unknown_dataset(tmp_path):
    result = command(["bench", "--dataset", "nosuch", "--runs-dir", str(tmp_path / "runs"),
                      "--results-dir", str(tmp_path / "results")], tmp_path)
    assert result.returncode == 2
    assert "unknown dataset 'nosuch'" in one_error_line(result.stderr) and "builtin" in result.stderr


def test_data_check_of_a_folder_in_no_layout(tmp_path):
    (tmp_path / "photos").mkdir()
    result = command(["data", "check", str(tmp_path / "photos")], tmp_path)
    assert result.returncode == 2
    assert f"{tmp_path / 'photos'}: not a dataset folder in a known layout" in one_error_line(result.stderr)


# -- the same main(), in-process -------------------------------------------------------------------
def run_main(args: list[str], capsys, monkeypatch) -> tuple[int, str]:
    from i2ibench.cli import main

    monkeypatch.setattr(sys, "argv", [sys.argv[0]])  # build_cli rewrites sys.argv; restore it afterwards
    try:
        status = main(args)
    except SystemExit as exit_:  # a usage error from jsonargparse
        status = exit_.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("option, value, expected", [
    ("--data.batch_size", "0", "data.batch_size must be a positive integer, got 0; set --data.batch_size"),
    ("--data.eval_batch_size", "-1", "data.eval_batch_size must be a positive integer, got -1"),
    ("--data.load_size", "200", "data.load_size (200) is smaller than data.crop_size (256)"),
    ("--data.mode", "masks", "data.mode: unknown value 'masks'; use one of auto, unaligned, paired, multi-domain, mask"),
    ("--data.preprocess", "scale", "data.preprocess: unknown value 'scale'"),
])
def test_bad_data_options(option, value, expected, tmp_path, capsys, monkeypatch):
    status, err = run_main(["fit", "--method", "cyclegan", option, value,
                            "--trainer.default_root_dir", str(tmp_path)], capsys, monkeypatch)
    assert status == 2 and expected in one_error_line(err)


def test_an_unknown_method(tmp_path, capsys, monkeypatch):
    status, err = run_main(["fit", "--method", "cyclegann"], capsys, monkeypatch)
    assert status == 2 and "unknown method 'cyclegann'; known: " in one_error_line(err) and "cyclegan," in err


def test_a_truncated_image_stops_fit_before_training(tmp_path, capsys, monkeypatch):
    data = small_set(tmp_path / "data", truncate="trainB/1.png")
    status, err = run_main(["fit", "--method", "cyclegan", "--data.dataset", str(data), *TINY,
                            "--trainer.default_root_dir", str(tmp_path / "run")], capsys, monkeypatch)
    assert status == 2 and "bad image file(s)" in one_error_line(err)
    assert f"{data / 'trainB' / '1.png'}: cannot be decoded" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_unknown_dataset_in_fit(tmp_path, capsys, monkeypatch):
    status, err = run_main(["fit", "--method", "cyclegan", *TINY, "--data.dataset", str(tmp_path / "missing"),
                            "--trainer.default_root_dir", str(tmp_path / "run")], capsys, monkeypatch)
    assert status == 2 and f"unknown dataset '{tmp_path / 'missing'}'" in one_error_line(err)


def test_missing_evaluation_weights_stop_fit_before_training(tmp_path, capsys, monkeypatch, builtin_root):
    status, err = run_main(["fit", "--method", "cyclegan", *TINY, "--data.dataset", str(builtin_root),
                            "--evaluation.weights", str(tmp_path / "nope.pth"),
                            "--trainer.default_root_dir", str(tmp_path / "run")], capsys, monkeypatch)
    assert status == 2
    assert f"{tmp_path / 'nope.pth'}: Inception weights file not found (set by evaluation.weights)" in one_error_line(err)
    assert not (tmp_path / "run" / "checkpoints").exists()  # no epoch was trained


def test_a_type_error_is_jsonargparse_usage_with_status_2(tmp_path, capsys, monkeypatch):
    """jsonargparse's own message (usage + the option) is acceptable: status 2, no traceback."""
    status, err = run_main(["fit", "--method", "cyclegan", "--data.batch_size", "two"], capsys, monkeypatch)
    assert status == 2 and "Traceback" not in err and "data.batch_size" in err


def test_verbose_shows_the_traceback(tmp_path, capsys, monkeypatch):
    status, err = run_main(["fit", "--verbose", "--method", "cyclegan", "--data.batch_size", "0"], capsys, monkeypatch)
    assert status == 2 and "Traceback" in err and "ConfigError" in err


def test_method_without_a_name(tmp_path, capsys, monkeypatch):
    status, err = run_main(["fit", "--method"], capsys, monkeypatch)
    assert status == 2 and "--method needs a name" in one_error_line(err)
