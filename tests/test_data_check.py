"""`i2ibench data check` checks what `fit` would: masks, image sizes against the crop, broken links.

Runs the real command line (`i2ibench.cli.main`) in-process on small real PNG folders; the exit
status and the one-line error are what a user sees.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 40


def run(capsys, *argv: str) -> tuple[int, str, str]:
    from i2ibench.cli import main

    try:
        status = main(["data", "check", *argv])
    except SystemExit as exit_:  # argparse / jsonargparse usage errors
        status = exit_.code
    out = capsys.readouterr()
    return status, out.out, out.err


def two_domain(root: Path, n: int = 2, masks: bool = False) -> Path:
    for split in ("train", "test"):
        for domain in "AB":
            (root / f"{split}{domain}").mkdir(parents=True)
            if masks:
                (root / f"{split}{domain}_seg").mkdir()
            for i in range(n):
                Image.new("RGB", (SIZE, SIZE), (40 * i, 90, 200)).save(root / f"{split}{domain}" / f"{i}.png")
                if masks:
                    mask = np.zeros((SIZE, SIZE), np.uint8)
                    mask[5:20, 5:20] = 255
                    Image.fromarray(mask).save(root / f"{split}{domain}_seg" / f"{i}_0.png")
    return root


def test_a_good_mask_dataset_is_reported_with_its_masks(tmp_path, capsys):
    root = two_domain(tmp_path / "set", masks=True)
    status, out, err = run(capsys, str(root), "--data.load_size", "40", "--data.crop_size", "32")
    assert status == 0, err
    assert "with masks" in out and "A: 2 images (2 masks used)" in out and "all images and masks OK" in out


def test_a_mask_of_the_wrong_size_fails_the_check(tmp_path, capsys):
    root = two_domain(tmp_path / "set", masks=True)
    Image.new("L", (SIZE + 4, SIZE), 255).save(root / "trainB_seg" / "1_0.png")
    status, out, err = run(capsys, str(root))
    assert status == 2
    assert err.startswith("i2ibench: error: ") and "trainB_seg/1_0.png: mask is 44x40 but its image 1.png is 40x40" in err


def test_masks_for_only_some_domains_are_a_layout_error(tmp_path, capsys):
    root = two_domain(tmp_path / "set", masks=True)
    for folder in ("trainB_seg", "testB_seg"):
        for f in (root / folder).iterdir():
            f.unlink()
        (root / folder).rmdir()
    status, out, err = run(capsys, str(root))
    assert status == 2 and "trainB_seg/" in err and "would be ignored" in err


def test_images_smaller_than_the_crop_fail_with_fits_options(tmp_path, capsys):
    root = two_domain(tmp_path / "set")
    status, out, err = run(capsys, str(root), "--data.preprocess", "crop", "--data.crop_size", "48")
    assert status == 2
    assert f"{root / 'trainA' / '0.png'}: 40x40 is smaller than the crop size 48" in err
    assert "4 bad image file(s)" in err  # train A and B; evaluation resizes, so test images are fine


def test_a_fit_config_file_is_read_and_later_options_win(tmp_path, capsys):
    root = two_domain(tmp_path / "set")
    config = tmp_path / "run.yaml"
    config.write_text(f"model:\n  class_path: anything\ndata:\n  dataset: {root}\n  preprocess: crop\n  crop_size: 48\n"
                      "trainer:\n  max_epochs: 3\n")
    status, out, err = run(capsys, "--config", str(config))
    assert status == 2 and "smaller than the crop size 48" in err
    status, out, err = run(capsys, "--config", str(config), "--data.crop_size", "40")
    assert status == 0 and "crop_size 40" in out, err


def test_bad_option_values_are_named(tmp_path, capsys):
    root = two_domain(tmp_path / "set")
    status, out, err = run(capsys, str(root), "--data.crop_size", "0")
    assert status == 2 and "i2ibench: error: data.crop_size must be a positive integer, got 0" in err
    status, out, err = run(capsys, str(root), "--data.load_size", "100", "--data.crop_size", "128")
    assert status == 2 and "data.load_size (100) is smaller than data.crop_size (128)" in err


def test_dangling_links_and_link_loops_are_reported_not_skipped(tmp_path, capsys):
    root = two_domain(tmp_path / "set")
    os.symlink(tmp_path / "gone.png", root / "trainA" / "dangling.png")
    os.symlink("loop.png", root / "testB" / "loop.png")
    status, out, err = run(capsys, str(root))
    assert status == 2
    assert f"{root / 'trainA' / 'dangling.png'}: dangling symbolic link" in err
    assert f"{root / 'testB' / 'loop.png'}: symbolic link loop" in err


def test_a_missing_folder_is_one_line(tmp_path, capsys):
    status, out, err = run(capsys, str(tmp_path / "nothing-here"))
    assert status == 2 and err.startswith("i2ibench: error: ") and err.count("\n") == 1
    assert str(tmp_path / "nothing-here") in err
