"""Bad input to the evaluation: one clear error each, before any feature is extracted."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from i2ibench.data.images import DataError
from i2ibench.metrics.folder_eval import evaluate_folders, scan_folder
from i2ibench.metrics.inception import WEIGHTS_ENV, InceptionExtractor, WeightsError, resolve_weights_path

from conftest import inception_weights
from test_methods_cyclegan import run_cli

WEIGHTS = inception_weights()


def folder(path: Path, sizes: list[tuple[int, int]], prefix: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (20 * i, 100, 200)).save(path / f"{prefix}{i:02d}.png")
    return path


def test_folder_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        evaluate_folders(tmp_path / "empty", tmp_path / "empty", lpips="off")


def test_fewer_than_two_images(tmp_path):
    one = folder(tmp_path / "one", [(16, 16)])
    with pytest.raises(DataError, match="at least 2 images"):
        scan_folder(one, "--fake")


def test_mixed_sizes_are_resized_and_said_once(tmp_path, caplog):
    mixed = folder(tmp_path / "mixed", [(32, 32), (32, 32), (40, 24), (40, 24), (32, 32)])
    with caplog.at_level(logging.WARNING):
        paths, size = scan_folder(mixed, "--fake")
    assert size == (32, 32)
    messages = [r.getMessage() for r in caplog.records if "resized" in r.getMessage()]
    assert len(messages) == 1 and str(mixed) in messages[0]
    assert "2 of 5 images resized to 32x32" in messages[0] and "bicubic" in messages[0] and "40x24" in messages[0]


def test_sub_folders_are_reported_by_name_and_count(tmp_path, caplog):
    """Only the folder's own images are evaluated; the sub-folders left out are named, not skipped silently."""
    images = folder(tmp_path / "fake", [(16, 16)] * 3)
    for name in ("epoch_10", "epoch_20"):
        folder(images / name, [(16, 16)] * 2)
    (images / ".thumbnails").mkdir()  # hidden: not reported, like hidden files
    with caplog.at_level(logging.WARNING):
        paths, _ = scan_folder(images, "--fake")
    assert len(paths) == 3
    [message] = [r.getMessage() for r in caplog.records if "sub-folder" in r.getMessage()]
    assert str(images) in message and "2 sub-folder(s)" in message and "epoch_10" in message


def test_a_folder_of_only_sub_folders_names_them(tmp_path):
    parent = tmp_path / "results"
    for name in ("A2B", "B2A"):
        folder(parent / name, [(16, 16)] * 2)
    with pytest.raises(DataError) as err:
        scan_folder(parent, "--real")
    assert "A2B, B2A" in str(err.value) and "not searched" in str(err.value) and "--real" in str(err.value)


def test_ground_truth_names_must_match_fake(tmp_path):
    real = folder(tmp_path / "real", [(16, 16)] * 3)
    fake = folder(tmp_path / "fake", [(16, 16)] * 3)
    gt = folder(tmp_path / "gt", [(16, 16)] * 3, prefix="other_")
    with pytest.raises(DataError) as err:
        evaluate_folders(real, fake, gt=gt, lpips="off")
    assert str(gt) in str(err.value) and "00.png" in str(err.value)


def test_weights_that_are_not_an_inception_state_dict(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable PyTorch state dict"):
        InceptionExtractor(text)
    other = tmp_path / "linear.pth"
    torch.save(torch.nn.Linear(4, 2).state_dict(), other)
    with pytest.raises(WeightsError, match="not a torch-fidelity InceptionV3 state dict"):
        InceptionExtractor(other)


@pytest.mark.skipif(WEIGHTS is None, reason="no Inception weights")
def test_inception_layers_must_match_too(tmp_path):
    state = torch.load(WEIGHTS, weights_only=True)
    del state["Mixed_7c.branch_pool.conv.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(WeightsError, match=str(broken)):
        InceptionExtractor(broken)


def test_weights_path_resolution(tmp_path, monkeypatch):
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"x")
    from_env = tmp_path / "env.pth"
    from_env.write_bytes(b"x")
    monkeypatch.setenv(WEIGHTS_ENV, str(from_env))
    assert resolve_weights_path(explicit) == explicit  # an explicit path wins
    assert resolve_weights_path() == from_env
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match="missing.pth"):
        resolve_weights_path()


@pytest.mark.skipif(WEIGHTS is None, reason="no Inception weights")
def test_eval_command_writes_a_record_and_fails_clearly(tmp_path, builtin_root):
    out = tmp_path / "record.json"
    real = tmp_path / "real"
    shutil.copytree(builtin_root / "valB", real)
    folder(real / "old-run", [(16, 16)] * 2)  # not evaluated, and said so on stderr
    odd = sorted(real.glob("*.png"))[0]
    Image.open(odd).resize((40, 24)).save(odd)  # resized back, and said so on stderr
    result = run_cli(["eval", "--real", str(real), "--fake", str(builtin_root / "valA"),
                      "--gt", str(builtin_root / "valB"), "--lpips", "off", "--kid-subsets", "5",
                      "--weights", str(WEIGHTS), "--out", str(out)], cwd=tmp_path)
    assert "fid" in result.stdout and "ssim_gt" in result.stdout and out.is_file()
    assert "1 sub-folder(s)" in result.stderr and "old-run" in result.stderr
    assert f"1 of {len(list(real.glob('*.png')))} images resized to 32x32" in result.stderr
    import subprocess
    import sys

    failed = subprocess.run([sys.executable, "-m", "i2ibench", "eval", "--real", str(tmp_path / "nowhere"),
                             "--fake", str(builtin_root / "valA")], capture_output=True, text=True)
    assert failed.returncode == 2 and "nowhere" in failed.stderr and "Traceback" not in failed.stderr


def test_a_silent_server_ends_the_weights_download_instead_of_hanging():
    """torchvision's download (urllib) sets no timeout; `socket_timeout` bounds it (a server that accepts
    the connection and never answers, on 127.0.0.1)."""
    import socket
    import time
    import urllib.request

    from i2ibench.metrics.content import socket_timeout

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        start = time.monotonic()
        with socket_timeout(1.0), pytest.raises(OSError):  # socket.timeout / URLError are OSErrors
            urllib.request.urlopen(f"http://127.0.0.1:{port}/alexnet.pth")
        assert time.monotonic() - start < 10
        assert socket.getdefaulttimeout() is None  # restored
    finally:
        server.close()
