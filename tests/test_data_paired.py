"""Paired data (data.paired): aligned crops and flips, the side-by-side A|B layout, and the refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_datamodule


def same_content_folder(root: Path, builtin_root: Path, count: int = 6) -> Path:
    """trainA/ and trainB/ holding byte-identical files under the same names (and a paired test split):
    any aligned batch must then have A == B pixel for pixel, and any unaligned one need not."""
    sources = sorted((builtin_root / "testA").iterdir())[:count]  # named 0000.png, ... (not per domain)
    for split in ("train", "test"):
        for domain in ("A", "B"):
            (root / f"{split}{domain}").mkdir(parents=True)
            for path in sources:
                shutil.copy(path, root / f"{split}{domain}" / path.name)
    return root


def batches(datamodule, epochs: int = 2) -> list[dict]:
    loader = datamodule.train_dataloader()
    out = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        out += list(loader)
    return out


def test_aligned_batches_share_one_crop_and_flip(builtin_root, tmp_path):
    """32 px images resized to 48 and cropped to 32: crops vary, and both images get the same one."""
    root = same_content_folder(tmp_path / "same", builtin_root)
    datamodule = tiny_datamodule(root, mode="paired", load_size=48, crop_size=32, batch_size=2)
    datamodule.setup("fit")
    seen = batches(datamodule, epochs=3)
    assert all(torch.equal(b["A"], b["B"]) for b in seen)
    assert all(Path(a).name == Path(b).name for batch in seen for a, b in zip(batch["A_path"], batch["B_path"]))
    # The augmentation really varies (else equality would be trivial): one file seen in different crops/flips.
    first = Path(seen[0]["A_path"][0]).name
    views = [b["A"][k] for b in seen for k, p in enumerate(b["A_path"]) if Path(p).name == first]
    assert len(views) == 3 and not all(torch.equal(views[0], v) for v in views[1:])


def test_unaligned_sampling_of_the_same_folder_does_not_align(builtin_root, tmp_path):
    root = same_content_folder(tmp_path / "same", builtin_root)
    datamodule = tiny_datamodule(root, mode="unaligned", load_size=48, crop_size=32, batch_size=2)
    datamodule.setup("fit")
    assert not all(torch.equal(b["A"], b["B"]) for b in batches(datamodule))


def test_aligned_sampler_is_a_function_of_seed_and_epoch():
    from i2ibench.data.paired import AlignedSampler

    def draws(seed: int, epoch: int) -> list:
        sampler = AlignedSampler(7, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert draws(3, 1) == draws(3, 1)
    assert sorted(d.index for d in draws(3, 1)) == list(range(7))  # every pair once per epoch
    assert draws(3, 1) != draws(3, 2) and draws(3, 1) != draws(4, 1)


def test_paired_training_loader_resumes_mid_epoch(builtin_root, tmp_path):
    """The resumable loader's contract (data.resumable) holds for the aligned sampler."""
    root = same_content_folder(tmp_path / "same", builtin_root)
    datamodule = tiny_datamodule(root, mode="paired", load_size=48, crop_size=32, batch_size=2)
    datamodule.setup("fit")
    straight = datamodule.train_dataloader()
    straight.sampler.set_epoch(1)
    iterator = iter(straight)
    next(iterator)
    saved = straight.state_dict()
    rest = list(iterator)
    resumed = datamodule.train_dataloader()
    resumed.load_state_dict(saved)
    iterator = iter(resumed)
    resumed.sampler.set_epoch(1)
    again = list(iterator)
    assert [b["A_path"] for b in again] == [b["A_path"] for b in rest]
    assert all(torch.equal(x["A"], y["A"]) for x, y in zip(again, rest))


# -- the side-by-side A|B layout ----------------------------------------------------------------
def side_by_side_folder(root: Path, builtin_root: Path, width_trim: int = 0) -> Path:
    """train/ and test/ files of a photo (left) beside its own sketch (right), like the Pix2Pix sets."""
    for split, source in (("train", "val"), ("test", "test")):
        (root / split).mkdir(parents=True)
        for path in sorted((builtin_root / f"{source}A").iterdir())[:4]:
            left, right = Image.open(path), Image.open(builtin_root / f"{source}B" / path.name)
            both = Image.new("RGB", (left.width + right.width - width_trim, left.height))
            both.paste(left, (0, 0))
            both.paste(right, (left.width, 0))
            both.save(root / split / f"{path.stem}.png")
    return root


def test_side_by_side_files_are_read_as_pairs(builtin_root, tmp_path):
    root = side_by_side_folder(tmp_path / "facades-like", builtin_root)
    datamodule = tiny_datamodule(root, mode="paired", load_size=32, crop_size=32, flip=False)
    datamodule.setup("fit")
    assert datamodule.layout.kind == "two-domain" and datamodule.layout.root != root  # the split copy
    for split, source in (("train", "val"), ("test", "test")):
        for domain in ("A", "B"):
            paths = datamodule.images[split][domain]
            assert [p.stem for p in paths] == sorted(p.stem for p in (root / split).iterdir())
            for path in paths:  # each half is exactly the original image of that side
                original = Image.open(builtin_root / f"{source}{domain}" / f"{path.stem}.png").convert("RGB")
                assert np.array_equal(np.asarray(Image.open(path)), np.asarray(original))
    batch = next(iter(datamodule.train_dataloader()))  # no resize, no crop, no flip: the halves themselves
    name = Path(batch["A_path"][0]).name
    for domain in ("A", "B"):
        expected = np.asarray(Image.open(builtin_root / f"val{domain}" / name).convert("RGB"), dtype=np.float32)
        assert np.allclose((batch[domain][0].permute(1, 2, 0).numpy() + 1) * 127.5, expected, atol=1e-3)
    assert "B_gt" in datamodule.eval_dataset("test", "A2B")[0]  # the test split is paired for evaluation


def test_side_by_side_file_with_an_odd_width_is_named(builtin_root, tmp_path):
    from i2ibench.data.images import DataError

    root = side_by_side_folder(tmp_path / "odd", builtin_root, width_trim=1)
    with pytest.raises(DataError, match=r"odd/train/\d+\.png: width 63 is odd"):
        tiny_datamodule(root, mode="paired").setup("fit")


# -- refusals -----------------------------------------------------------------------------------
def test_a_paired_method_on_unpaired_folders_is_refused_naming_them(builtin_root, tmp_path):
    from i2ibench.data.images import DataError

    root = tmp_path / "unpaired"
    for split in ("train", "test"):
        for domain, prefix in (("A", "photo"), ("B", "sketch")):
            (root / f"{split}{domain}").mkdir(parents=True)
            for path in sorted((builtin_root / f"test{domain}").iterdir())[:3]:
                shutil.copy(path, root / f"{split}{domain}" / f"{prefix}_{path.name}")
    with pytest.raises(DataError) as error:
        tiny_datamodule(root, mode="paired").setup("fit")
    message = str(error.value)
    assert str(root) in message and "trainA/ and trainB/" in message and "same file names" in message
    assert "3 only in trainA/ (e.g. photo_0000" in message and "unpaired method" in message
    tiny_datamodule(root, mode="unaligned").setup("fit")  # unpaired methods still train on it


def test_a_pair_of_different_sizes_is_named(builtin_root, tmp_path):
    from i2ibench.data.images import DataError

    root = same_content_folder(tmp_path / "sizes", builtin_root, count=3)
    odd_one = root / "trainB" / "0001.png"
    Image.open(odd_one).resize((40, 32)).save(odd_one)
    with pytest.raises(DataError, match=r"trainA/0001\.png: 32x32, but its pair .*trainB/0001\.png is 40x32"):
        tiny_datamodule(root, mode="paired").setup("fit")
