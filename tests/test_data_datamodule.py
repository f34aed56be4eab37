"""The shared datamodule: batch contract, unaligned sampling, paired-test detection, layouts."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from lightning_fabric.utilities.distributed import DistributedSamplerWrapper

from i2ibench.data.folders import UnalignedSampler, detect_layout

from conftest import SHARED_DATASETS, needs_shared_data, tiny_datamodule


def test_training_batch_contract(builtin_root):
    datamodule = tiny_datamodule(builtin_root, batch_size=4)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    for domain in "AB":
        images = batch[domain]
        assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
        assert -1.0 <= images.min() and images.max() <= 1.0
        assert images.min() < -0.5 and images.max() > 0.5  # really scaled to [-1, 1], not [0, 1]
        assert len(batch[f"{domain}_path"]) == 4 and all(Path(p).is_file() for p in batch[f"{domain}_path"])


def test_epoch_length_is_the_larger_domain_and_visits_every_a(tmp_path):
    sampler = UnalignedSampler(size_a=7, size_b=3, seed=0)
    draws = list(sampler)
    assert len(draws) == len(sampler) == 7
    assert sorted(d.index_a for d in draws) == list(range(7))
    assert all(0 <= d.index_b < 3 for d in draws)

    bigger_b = list(UnalignedSampler(size_a=3, size_b=9, seed=0))
    assert len(bigger_b) == 9 and Counter(d.index_a for d in bigger_b) == {0: 3, 1: 3, 2: 3}


def test_unaligned_sampling_is_seeded_per_epoch():
    def draws(seed, epoch):
        sampler = UnalignedSampler(50, 40, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert draws(0, 0) == draws(0, 0)  # same seed and epoch: the same stream, in any process
    assert draws(0, 0) != draws(0, 1)  # a new order and new B partners each epoch
    assert draws(0, 0) != draws(1, 0)
    b_indices = [d.index_b for d in draws(0, 0)]
    assert len(set(b_indices)) > 20  # B drawn at random, not aligned with A
    assert [d.index_b for d in draws(0, 0)] != [d.index_a % 40 for d in draws(0, 0)]


def test_unaligned_sampling_shards_under_ddp():
    """Lightning wraps the sampler for DDP; two ranks together see every draw of the epoch."""
    sampler = UnalignedSampler(10, 6, seed=3)
    shards = []
    for rank in range(2):
        wrapper = DistributedSamplerWrapper(sampler, num_replicas=2, rank=rank, shuffle=False)
        wrapper.set_epoch(2)
        shards.append(list(wrapper))
    sampler.set_epoch(2)
    assert sorted(shards[0] + shards[1]) == sorted(sampler)


def test_same_augmentation_stream_with_and_without_workers(builtin_root):
    plain = tiny_datamodule(builtin_root, batch_size=2)
    plain.setup("fit")
    workers = tiny_datamodule(builtin_root, batch_size=2, num_workers=2)
    workers.setup("fit")
    for a, b in zip(plain.train_dataloader(), workers.train_dataloader()):
        torch.testing.assert_close(a["A"], b["A"])
        torch.testing.assert_close(a["B"], b["B"])
        break


def test_paired_test_split_carries_ground_truth(builtin_root):
    datamodule = tiny_datamodule(builtin_root)
    datamodule.setup("fit")
    assert datamodule.is_paired("test") and datamodule.is_paired("val")
    a2b, b2a = datamodule.test_dataloader()
    batch = next(iter(a2b))
    assert batch["task"][0] == "A2B" and batch["A"].shape == batch["B_gt"].shape == (8, 3, 32, 32)
    from i2ibench.data.images import load_rgb

    for source, gt in zip(batch["A_path"], batch["B_gt"]):  # the ground truth is testB's same-named image
        expected = datamodule.eval_transform.image(load_rgb(builtin_root / "testB" / Path(source).name))
        torch.testing.assert_close(gt, expected)
    assert not torch.allclose(batch["B_gt"][0], batch["B_gt"][1])
    batch = next(iter(b2a))
    assert batch["task"][0] == "B2A" and "A_gt" in batch
    # evaluation is deterministic: no crop, no flip
    again = next(iter(datamodule.test_dataloader()[1]))
    torch.testing.assert_close(batch["B"], again["B"])


def test_unpaired_test_split_has_no_ground_truth(tmp_path, builtin_root):
    root = tmp_path / "unpaired"
    for folder in ("trainA", "trainB", "testA", "testB"):
        (root / folder).mkdir(parents=True)
        for i, src in enumerate(sorted((builtin_root / folder).iterdir())[:4]):
            os.symlink(src, root / folder / (f"{folder}_{i}.png"))
    datamodule = tiny_datamodule(root)
    datamodule.setup("fit")
    assert not datamodule.is_paired("test")
    assert datamodule.eval_split == "test"  # no val split: in-training evaluation tracks test
    batch = next(iter(datamodule.test_dataloader()[0]))
    assert "B_gt" not in batch


def test_eval_loaders_do_not_pad_under_ddp(builtin_root):
    """Each of 2 ranks gets a disjoint share; together exactly the split, no duplicates."""
    datamodule = tiny_datamodule(builtin_root)
    datamodule.setup("fit")
    dataset = datamodule.eval_dataset("test", "A2B")
    seen = []
    for rank in range(2):
        seen += list(UnrepeatedDistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False))
    assert sorted(seen) == list(range(len(dataset)))


def test_layout_detection(tmp_path, builtin_root):
    assert detect_layout(builtin_root).kind == "two-domain"
    multi = tmp_path / "multi"
    for domain in ("cat", "dog", "wild"):
        (multi / "train" / domain).mkdir(parents=True)
    layout = detect_layout(multi)
    assert layout.kind == "multi-domain" and layout.domains == ("cat", "dog", "wild")


@needs_shared_data
def test_real_cufs_photos_and_sketches(tmp_path):
    """The real CUFS files (palette sketches, 200x250 photos) through the datamodule, linked not copied."""
    raw = SHARED_DATASETS / "cufs-student"
    root = tmp_path / "cufs"
    for split, raw_split in (("train", "CUHK_student_train"), ("test", "CUHK_student_test")):
        for domain, kind in (("A", "photos"), ("B", "sketches")):
            (root / f"{split}{domain}").mkdir(parents=True)
            for src in sorted((raw / raw_split / kind).iterdir())[:6]:
                os.symlink(src, root / f"{split}{domain}" / src.name)
    datamodule = tiny_datamodule(root, load_size=72, crop_size=64, batch_size=2)
    datamodule.setup("fit")
    assert datamodule.is_paired("test")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["A"].shape == batch["B"].shape == (2, 3, 64, 64)
    test_batch = next(iter(datamodule.test_dataloader()[0]))
    assert test_batch["B_gt"].shape == (6, 3, 64, 64)


# -- exact resume (data.resumable) ----------------------------------------------------------------
def paths_of(batches: list[dict]) -> list[tuple[str, ...]]:
    """What a batch is: its A and B files (the draws) and a checksum of the augmented pixels."""
    return [(*batch["A_path"], *batch["B_path"], round(float(batch["A"].sum() + batch["B"].sum()), 3))
            for batch in batches]


def resumable_loader(datamodule):
    """12 A and 8 B images, batch 2: 6 batches per epoch, one worker (indices are drawn ahead)."""
    from i2ibench.data.folders import UnalignedDataset
    from i2ibench.data.resumable import ResumableDataLoader

    paths_a, paths_b = datamodule.images["train"]["A"][:12], datamodule.images["train"]["B"][:8]
    sampler = UnalignedSampler(len(paths_a), len(paths_b), seed=3)
    return ResumableDataLoader(UnalignedDataset(paths_a, paths_b, datamodule.train_transform), batch_size=2,
                               sampler=sampler, num_workers=1, persistent_workers=True)


@pytest.mark.parametrize("consumed, next_epoch", [(2, 1), (6, 2)], ids=["mid-epoch", "epoch-end"])
def test_a_resumed_loader_continues_with_the_next_batch(builtin_root, consumed, next_epoch):
    """Lightning's restart order: a new loader (its sampler at epoch 0) gets the saved state, its
    iterator is created, and only then is the sampler's epoch set (to the saved epoch after a
    mid-epoch save, to the next one after an epoch-end save). The batches must continue exactly
    where the saved run stopped: the rest of epoch 1, or all of epoch 2."""
    datamodule = tiny_datamodule(builtin_root, load_size=36, crop_size=32)
    datamodule.setup("fit")
    straight = resumable_loader(datamodule)
    epochs = {}
    for epoch in (0, 1, 2):
        straight.sampler.set_epoch(epoch)
        iterator = iter(straight)
        epochs[epoch] = [next(iterator) for _ in range(consumed)] if epoch == 1 else list(iterator)
        if epoch == 1:
            saved = straight.state_dict()
            epochs[1] += list(iterator)
    assert saved == {"epoch": 1, "batches": consumed} and len(epochs[1]) == 6

    resumed = resumable_loader(datamodule)
    resumed.load_state_dict(saved)
    iterator = iter(resumed)
    resumed.sampler.set_epoch(next_epoch)
    expected = epochs[1][consumed:] if next_epoch == 1 else epochs[2]
    assert paths_of(list(iterator)) == paths_of(expected)
    assert resumed.state_dict() == {"epoch": next_epoch, "batches": 6}


def test_the_datamodule_trains_from_a_resumable_loader(builtin_root):
    from i2ibench.data.resumable import ResumableDataLoader

    datamodule = tiny_datamodule(builtin_root)
    datamodule.setup("fit")
    assert isinstance(datamodule.train_dataloader(), ResumableDataLoader)
