"""Task names, and the evaluation items each kind of task gets from the datamodule."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_datamodule
from i2ibench.data.images import load_rgb
from i2ibench.data.tasks import parse_task


def test_task_names_parse_into_their_kind():
    assert parse_task("A2B") == ("A2B", "A", "B", None)
    assert parse_task("cat->dog@latent").mode == "latent" and parse_task("cat->dog@latent").styled
    assert parse_task("cat->dog@reference").styled
    label = parse_task("cat->dog")
    assert (label.source, label.target, label.mode, label.styled) == ("cat", "dog", "label", False)
    for bad in ("cat->dog@label", "cat->dog@", "->dog", "cat->", "cat->dog@style", "AB"):
        with pytest.raises(ValueError):
            parse_task(bad)


def paired_multi_folder(root: Path, builtin_root: Path, count: int = 5) -> Path:
    """A two-domain folder whose A and B files share names (paired), for @latent / @reference tasks."""
    for split in ("train", "test"):
        for domain in ("A", "B"):
            (root / f"{split}{domain}").mkdir(parents=True)
            for index, path in enumerate(sorted((builtin_root / f"test{domain}").iterdir())[:count]):
                shutil.copy(path, root / f"{split}{domain}" / f"{index:04d}.png")
    return root


def test_styled_tasks_carry_k_styles_and_the_ground_truth_of_paired_data(builtin_root, tmp_path):
    root = paired_multi_folder(tmp_path / "data", builtin_root)
    datamodule = tiny_datamodule(root, mode="paired", outputs_per_source=3, latent_dim=4)
    datamodule.setup("fit")
    latent = datamodule.eval_dataset("test", "A->B@latent")
    item = latent[2]
    assert item["z"].shape == (3, 4) and datamodule.styles_per_source("A->B@latent") == 3
    expected = datamodule.eval_transform.image(load_rgb(root / "testB" / "0002.png"))
    assert torch.equal(item["gt"], expected)  # the target of the same name, not another image
    reference = datamodule.eval_dataset("test", "B->A@reference")[1]
    assert reference["x_ref"].shape[0] == 3
    assert torch.equal(reference["gt"], datamodule.eval_transform.image(load_rgb(root / "testA" / "0001.png")))


def test_label_tasks_have_one_output_per_source_and_no_ground_truth_when_unpaired(builtin_root, tmp_path):
    root = paired_multi_folder(tmp_path / "data", builtin_root)
    for path in (root / "testB").iterdir():  # other names: the test split is no longer paired
        path.rename(path.with_name("b" + path.name))
    datamodule = tiny_datamodule(root, mode="unaligned", outputs_per_source=3)
    datamodule.setup("fit")
    assert not datamodule.is_paired("test") and datamodule.styles_per_source("A->B") == 1
    item = datamodule.eval_dataset("test", "A->B")[0]
    assert (item["y_src"], item["y_trg"]) == (0, 1) and "gt" not in item and item["z"].shape[0] == 1


def test_samples_per_epoch_sets_the_unaligned_epoch_and_is_refused_for_pairs(builtin_root, tmp_path):
    """MUNIT counts iterations: its epoch is `samples_per_epoch` draws, cycling through A; pairs refuse it."""
    from i2ibench.errors import ConfigError

    datamodule = tiny_datamodule(builtin_root, mode="unaligned", samples_per_epoch=23)
    datamodule.setup("fit")
    sampler = datamodule.train_dataloader().sampler
    draws = list(sampler)
    assert len(sampler) == len(draws) == 23
    size_a = len(datamodule.images["train"]["A"])
    visits = [draw[0] for draw in draws]
    # successive random orders of A: no image twice before every image once
    for start in range(0, 23, size_a):
        chunk = visits[start:start + size_a]
        assert len(set(chunk)) == len(chunk)
    assert set(visits) == set(range(size_a)) if 23 >= size_a else len(set(visits)) == 23
    paired = tiny_datamodule(paired_multi_folder(tmp_path / "data", builtin_root), mode="paired", samples_per_epoch=5)
    paired.setup("fit")
    with pytest.raises(ConfigError, match="samples_per_epoch"):
        paired.train_dataloader()


def test_builtin_multi_domains_share_no_file_name_so_a_pair_of_them_is_not_paired():
    """The bench trains two-domain methods on two-domain views of builtin-multi's domains: equal names
    would declare different crops ground-truth pairs (they did, before the names carried the domain)."""
    from i2ibench.data.embedded import materialize
    from i2ibench.data.folders import detect_layout, paired_names, split_images

    layout = detect_layout(materialize("builtin-multi", size=32))
    for split in ("train", "test"):
        images = split_images(layout, split)
        for a in layout.domains:
            for b in layout.domains:
                if a < b:
                    assert not paired_names(images[a], images[b])
                    assert not {p.stem for p in images[a]} & {p.stem for p in images[b]}
