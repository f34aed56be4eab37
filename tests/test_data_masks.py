"""Instance masks: one foreground rule for the check, training and evaluation; literal file names.

The rule (data/masks.py): a 0/1 mask's 1s, else the 8-bit pixels >= 128. Expected masks are
computed here with numpy from the arrays written, never with the code under test.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2ibench.data.images import DataError

from conftest import SHARED_DATASETS, needs_shared_data, tiny_datamodule

SIZE = 24


def square(value: int, lo: int = 6, hi: int = 14) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[lo:hi, lo:hi] = value
    return mask


def antialiased() -> np.ndarray:
    """A square of 255 with a one-pixel soft rim (value 100) around it, as a resized mask has."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[5:15, 5:15] = 100
    mask[6:14, 6:14] = 255
    return mask


def mask_set(root: Path, masks: dict[str, list[np.ndarray]]) -> Path:
    """Every split and domain holds the images named in `masks`, each with those masks (train and test alike)."""
    for split in ("train", "test"):
        for domain in "AB":
            images, seg = root / f"{split}{domain}", root / f"{split}{domain}_seg"
            images.mkdir(parents=True)
            seg.mkdir(parents=True)
            for stem, arrays in masks.items():
                Image.new("RGB", (SIZE, SIZE), (90, 40, 200)).save(images / f"{stem}.png")
                for k, array in enumerate(arrays):
                    Image.fromarray(array).save(seg / f"{stem}_{k}.png")
    return root


def mask_module(root: Path, **overrides):
    # resize to the image's own size and crop all of it, no flip: training masks stay pixel-aligned with the files
    settings = dict(mode="mask", load_size=SIZE, crop_size=SIZE, flip=False, batch_size=1, max_instances=4)
    settings.update(overrides)
    datamodule = tiny_datamodule(root, **settings)
    datamodule.setup("fit")
    return datamodule


def training_masks(datamodule, stem: str) -> torch.Tensor:
    """The masks a training batch carries for image `stem` of domain A (its real instances only)."""
    from i2ibench.data.folders import UnalignedDraw

    loader = datamodule.train_dataloader()
    paths = datamodule.images["train"]["A"]
    index = [p.stem for p in paths].index(stem)
    item = loader.dataset[UnalignedDraw(index, 0, seed=1)]
    return item["A_masks"][: item["A_count"]]


def test_zero_one_masks_are_read_like_zero_255_masks(tmp_path):
    root = mask_set(tmp_path / "set", {"ones": [square(1)], "full": [square(255)]})
    datamodule = mask_module(root)
    expected = torch.from_numpy(square(1).astype(np.float32))
    for stem in ("ones", "full"):
        assert len(datamodule.masks[root / "trainA" / f"{stem}.png"]) == 1, stem  # the 0/1 mask is not dropped
        assert torch.equal(training_masks(datamodule, stem)[0], expected), stem
        test_item = datamodule.eval_dataset("test", "A2B")[[p.stem for p in datamodule.images["test"]["A"]].index(stem)]
        assert int(test_item["A_count"]) == 1 and torch.equal(test_item["A_masks"][0], expected), stem


def test_an_antialiased_mask_does_not_grow_in_training(tmp_path):
    soft = antialiased()
    root = mask_set(tmp_path / "set", {"soft": [soft]})
    datamodule = mask_module(root)
    mask = training_masks(datamodule, "soft")[0]
    expected = torch.from_numpy((soft >= 128).astype(np.float32))  # the soft rim is background
    assert int(mask.sum()) == 64 and torch.equal(mask, expected)


def test_the_area_order_uses_the_same_rule(tmp_path):
    """Largest first: a 0/1 mask of 8x8 outranks a 6x6 mask of 255 and a soft mask whose core is 4x4."""
    soft = np.zeros((SIZE, SIZE), np.uint8)
    soft[2:20, 2:20] = 120  # large but below the threshold everywhere except its core
    soft[10:14, 10:14] = 255
    root = mask_set(tmp_path / "set", {"img": [soft, square(255, 0, 6), square(1, 12, 20)]})
    kept = mask_module(root).masks[root / "trainA" / "img.png"]
    assert [p.name for p in kept] == ["img_2.png", "img_1.png", "img_0.png"]


@pytest.mark.parametrize("stem", ["crowd[1]", "[ab]", "x[!y]"])
def test_glob_characters_in_a_file_name_keep_its_masks(tmp_path, stem):
    root = mask_set(tmp_path / "set", {stem: [square(255)], "other": [square(255, 0, 4)]})
    if stem == "[ab]":  # a file that the glob pattern "[ab]_*" would wrongly match
        Image.fromarray(square(255)).save(root / "trainA_seg" / "a_0.png")
    datamodule = mask_module(root)
    assert [p.name for p in datamodule.masks[root / "trainA" / f"{stem}.png"]] == [f"{stem}_0.png"]


def test_files_that_belong_to_no_image_are_reported(tmp_path, caplog):
    root = mask_set(tmp_path / "set", {"img": [square(255)]})
    Image.fromarray(square(255)).save(root / "trainA_seg" / "ghost_0.png")
    (root / "trainA_seg" / "notes.txt").write_text("x")
    with caplog.at_level("WARNING"):
        mask_module(root)
    note = " ".join(r.getMessage() for r in caplog.records if "trainA_seg" in r.getMessage())
    assert "2 files that are no image's <stem>_<k>.png mask, ignored" in note


def test_broken_links_among_the_masks_are_errors_naming_them(tmp_path):
    root = mask_set(tmp_path / "set", {"img": [square(255)]})
    os.symlink(tmp_path / "nowhere.png", root / "trainA_seg" / "img_1.png")
    os.symlink("img_2.png", root / "trainB_seg" / "img_2.png")  # a link to itself: a loop
    with pytest.raises(DataError) as err:
        mask_module(root)
    message = str(err.value)
    assert "img_1.png: dangling symbolic link" in message and "img_2.png: symbolic link loop" in message


@needs_shared_data
def test_the_real_instagan_masks_follow_the_rule(tmp_path):
    """Real MHP masks (antialiased RGB PNGs): the evaluation masks are the half-range threshold, resized by nearest."""
    raw = SHARED_DATASETS / "instagan-samples" / "pants2skirt_mhp"
    root = tmp_path / "set"
    for split in ("train", "test"):
        for domain in "AB":
            for kind in ("", "_seg"):
                (root / f"{split}{domain}{kind}").mkdir(parents=True)
                for src in sorted((raw / f"sample{domain}{kind}").iterdir()):
                    os.symlink(src, root / f"{split}{domain}{kind}" / src.name)
    datamodule = tiny_datamodule(root, mode="mask", load_size=36, crop_size=32, max_instances_eval=20)
    datamodule.setup("fit")
    images = datamodule.images["test"]["A"]
    item = datamodule.eval_dataset("test", "A2B")[[p.stem for p in images].index("1602")]
    files = sorted((raw / "sampleA_seg").glob("1602_*.png"))
    grays = [np.asarray(Image.open(f).convert("L")) for f in files]
    assert sum(int(((g > 0) & (g < 255)).sum()) for g in grays) > 100  # the files really are antialiased
    expected = [np.asarray(Image.fromarray(((g >= 128) * 255).astype(np.uint8)).resize((32, 32), Image.NEAREST)) > 0
                for g in sorted(grays, key=lambda g: -int((g >= 128).sum()))]  # largest first
    assert int(item["A_count"]) == len(files) == 2
    for k, mask in enumerate(expected):
        assert np.array_equal(item["A_masks"][k].numpy().astype(bool), mask), k
