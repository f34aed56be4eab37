"""Bad input: every broken image gets one clear error naming the file, before training starts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2ibench.data.images import DataError, check_images, list_images, load_rgb

from conftest import SHARED_DATASETS, needs_shared_data, tiny_datamodule


def write_rgb(path: Path, size=(40, 40), value=128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 255 - value)).save(path)
    return path


def two_domain_dataset(root: Path, n: int = 3, size=(40, 40)) -> Path:
    for split in ("train", "test"):
        for domain in "AB":
            for i in range(n):
                write_rgb(root / f"{split}{domain}" / f"{i:02d}.png", size, value=40 * i + (domain == "B") * 10)
    return root


def setup_error(root: Path, **overrides) -> str:
    with pytest.raises(DataError) as err:
        tiny_datamodule(root, **overrides).setup("fit")
    return str(err.value)


def test_truncated_image_is_named(tmp_path):
    root = two_domain_dataset(tmp_path)
    bad = root / "trainA" / "01.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    message = setup_error(root)
    assert str(bad) in message and "cannot be decoded" in message


def test_truncated_jpeg_is_named(tmp_path):
    root = two_domain_dataset(tmp_path)
    jpeg = root / "trainB" / "05.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[:-400])
    assert str(jpeg) in setup_error(root)


def test_zero_byte_file_is_named(tmp_path):
    root = two_domain_dataset(tmp_path)
    empty = root / "testB" / "09.png"
    empty.write_bytes(b"")
    message = setup_error(root)
    assert str(empty) in message and "0 bytes" in message


def test_image_extension_with_garbage_is_named(tmp_path):
    root = two_domain_dataset(tmp_path)
    fake = root / "trainA" / "notreally.jpg"
    fake.write_text("this is not a JPEG")
    assert str(fake) in setup_error(root)


def test_non_image_file_is_named(tmp_path):
    root = two_domain_dataset(tmp_path)
    stray = root / "trainB" / "labels.csv"
    stray.write_text("a,b\n")
    message = setup_error(root)
    assert str(stray) in message and "not images" in message


def test_hidden_files_are_ignored_by_design(tmp_path):
    root = two_domain_dataset(tmp_path)
    (root / "trainA" / ".DS_Store").write_bytes(b"\x00\x01")
    assert len(list_images(root / "trainA")) == 3


def test_every_bad_file_is_listed_in_one_error(tmp_path):
    root = two_domain_dataset(tmp_path)
    (root / "trainA" / "00.png").write_bytes(b"")
    (root / "trainB" / "02.png").write_bytes(b"garbage")
    message = setup_error(root)
    # One error, every bad file in it: fixing one does not reveal the next only on the next run.
    assert str(root / "trainA" / "00.png") in message and str(root / "trainB" / "02.png") in message


def test_empty_domain_folder(tmp_path):
    root = two_domain_dataset(tmp_path)
    for f in (root / "trainB").iterdir():
        f.unlink()
    message = setup_error(root)
    assert str(root / "trainB") in message and "no images" in message


def test_missing_domain_folder(tmp_path):
    root = two_domain_dataset(tmp_path)
    for f in (root / "trainB").iterdir():
        f.unlink()
    (root / "trainB").rmdir()
    message = setup_error(root)
    assert "trainB" in message and "missing" in message


def test_folder_in_no_known_layout(tmp_path):
    write_rgb(tmp_path / "photos" / "a.png")
    message = setup_error(tmp_path)
    assert "two-domain" in message and "multi-domain" in message


def test_image_smaller_than_crop_without_resize(tmp_path):
    root = two_domain_dataset(tmp_path, size=(40, 40))
    small = write_rgb(root / "trainA" / "tiny.png", size=(20, 30))
    message = setup_error(root, preprocess="crop")
    assert str(small) in message and "smaller than the crop size 32" in message


def test_image_smaller_than_crop_is_resized_by_resize_and_crop(tmp_path):
    """The reference resizes to load_size first, so small images are a documented upscale, not an error."""
    root = two_domain_dataset(tmp_path, size=(40, 40))
    write_rgb(root / "trainA" / "tiny.png", size=(20, 30))
    datamodule = tiny_datamodule(root)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["A"].shape[-2:] == (32, 32)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA"])
def test_non_rgb_modes_are_converted_and_reported_once(tmp_path, caplog, mode):
    root = two_domain_dataset(tmp_path)
    for i in range(3):
        Image.new(mode, (40, 40)).save(root / "trainB" / f"{i:02d}.png")
    datamodule = tiny_datamodule(root)
    with caplog.at_level(logging.WARNING):
        datamodule.setup("fit")
    reports = [r.getMessage() for r in caplog.records if "converting to RGB" in r.getMessage()]
    assert len(reports) == 1 and "3 " in reports[0] and str(root / "trainB") in reports[0]
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["B"].shape[1] == 3


def test_sixteen_bit_images_are_rescaled_not_clipped(tmp_path):
    values = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(load_rgb(path))
    assert rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb[..., 0], np.round(values / 65535 * 255).astype(np.uint8))
    assert check_images([path]).conversions  # and it is reported as a conversion


def test_rgba_is_composited_over_white(tmp_path):
    path = tmp_path / "transparent.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    assert np.asarray(load_rgb(path)).min() == 255


@needs_shared_data
def test_real_palette_sketches_from_cufs_convert():
    sketches = SHARED_DATASETS / "cufs-student" / "CUHK_student_train" / "sketches"  # palette PNGs
    paths = sorted(sketches.iterdir())[:20]
    report = check_images(paths)
    assert all(np.asarray(load_rgb(p)).shape[2] == 3 for p in paths[:3])
    assert report.conversions == {"palette": 20}


def test_broken_links_are_bad_files_and_sub_folders_are_reported(tmp_path, caplog):
    import os

    root = two_domain_dataset(tmp_path)
    os.symlink(tmp_path / "moved-away.png", root / "trainA" / "03.png")
    os.symlink("04.png", root / "testA" / "04.png")  # a loop
    (root / "trainB" / "extra").mkdir()
    with caplog.at_level(logging.WARNING):
        message = setup_error(root)
    assert f"{root / 'trainA' / '03.png'}: dangling symbolic link (-> {tmp_path / 'moved-away.png'}" in message
    assert f"{root / 'testA' / '04.png'}: symbolic link loop" in message
    assert any("1 sub-folder(s) not read (extra/)" in r.getMessage() for r in caplog.records)
