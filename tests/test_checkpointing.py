"""Checkpoints are written atomically beside their target; a failed write keeps the previous one.

The disk-full case is simulated with a file whose writes fail with ENOSPC after part of the
checkpoint reached the disk (a real, partly written temp file): this machine runs tests as
root, for whom a read-only folder is still writable.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest
import torch

import i2ibench.checkpointing as checkpointing
from i2ibench.checkpointing import AtomicCheckpointIO, CheckpointWriteError


class FullDisk:
    """`open` for the checkpoint writer: files whose writes fail with ENOSPC after `room` bytes."""

    def __init__(self, room: int, fail_from_call: int = 1) -> None:
        self.room, self.fail_from_call, self.calls, self.paths = room, fail_from_call, 0, []

    def __call__(self, path, mode="r", *args, **kwargs):
        self.calls += 1
        self.paths.append(Path(path))
        file = open(path, mode, *args, **kwargs)
        if self.calls < self.fail_from_call:
            return file
        return _FillingFile(file, self.room)


class _FillingFile:
    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data) -> int:
        if len(data) > self.room:
            self.file.write(bytes(data[:self.room]))
            self.file.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def test_a_failed_write_keeps_the_previous_checkpoint_byte_for_byte(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "weights": torch.arange(1000.0)}, target)
    before = target.read_bytes()

    disk = FullDisk(room=4096)
    monkeypatch.setattr(checkpointing, "open", disk, raising=False)
    with pytest.raises(CheckpointWriteError) as failure:
        io.save_checkpoint({"step": 2, "weights": torch.randn(100_000)}, target)

    assert disk.paths[0].parent == target.parent  # written beside the target: same filesystem
    message = str(failure.value)
    assert "\n" not in message and str(target) in message and "No space left on device" in message
    assert target.read_bytes() == before
    assert torch.load(target, weights_only=True)["step"] == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # the partial temp file is gone


def test_a_write_is_fsynced_then_renamed_onto_the_target(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(checkpointing.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(checkpointing.os, "replace",
                        lambda src, dst: (events.append(("replace", Path(src).parent, Path(dst))),
                                          real_replace(src, dst))[1])
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 3}, target)
    assert events[0] == "fsync" and events[1] == ("replace", tmp_path, target) and events[2] == "fsync"
    assert torch.load(target, weights_only=True) == {"step": 3}


@pytest.mark.slow
def test_fit_stops_with_one_clear_error_and_keeps_last_ckpt_when_the_disk_fills(builtin_root, tmp_path,
                                                                                monkeypatch, capsys):
    from i2ibench.cli import main

    root = tmp_path / "run"
    last = root / "checkpoints" / "last.ckpt"
    snapshot = {}

    class FullDiskAfterFirstCheckpoint(FullDisk):
        def __call__(self, path, mode="r", *args, **kwargs):
            if self.calls == 1:
                snapshot["bytes"] = last.read_bytes()  # what epoch 0 left, just before the failing write
            return super().__call__(path, mode, *args, **kwargs)

    monkeypatch.setattr(checkpointing, "open", FullDiskAfterFirstCheckpoint(room=10_000, fail_from_call=2),
                        raising=False)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # build_cli rewrites it
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        status = main(["fit", "--method", "cyclegan", "--data.dataset", str(builtin_root), "--data.load_size", "36",
                       "--data.crop_size", "32", "--data.num_workers", "0",
                       "--model.init_args.generator_args.ngf", "4", "--model.init_args.generator_args.n_blocks", "1",
                       "--model.init_args.discriminator_args.ndf", "4", "--model.init_args.n_epochs", "1",
                       "--model.init_args.n_epochs_decay", "1", "--trainer.max_epochs", "2",
                       "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "0",
                       "--trainer.enable_progress_bar", "false", "--wandb.enabled", "false",
                       "--trainer.default_root_dir", str(root)])
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert lines[-1].startswith(f"i2ibench: error: could not write checkpoint {last}: No space left on device")
    assert "Traceback" not in "\n".join(lines)
    assert last.read_bytes() == snapshot["bytes"]
    assert torch.load(last, weights_only=False)["i2ibench"]["epochs_completed"] == 1
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize("verb, ckpt_path, message", [
    ("test", "last", "i2ibench: error: --ckpt_path last: no checkpoint in {root}/checkpoints; train first"),
    ("fit", "{root}/missing.ckpt", "i2ibench: error: --ckpt_path {root}/missing.ckpt: no such checkpoint file"),
])
def test_a_checkpoint_that_is_not_there_is_one_clear_error(builtin_root, tmp_path, monkeypatch, capsys, verb,
                                                          ckpt_path, message):
    """`test --ckpt_path last` without a checkpoint would score untrained weights; a missing file
    was a FileNotFoundError traceback after set-up."""
    from i2ibench.cli import main

    root = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    status = main([verb, "--method", "cyclegan", "--data.dataset", str(builtin_root),
                   "--model.init_args.generator_args.ngf", "4", "--model.init_args.generator_args.n_blocks", "1",
                   "--model.init_args.discriminator_args.ndf", "4", "--wandb.enabled", "false",
                   "--trainer.default_root_dir", str(root), "--ckpt_path", ckpt_path.format(root=root)])
    assert status == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(message.format(root=root))
