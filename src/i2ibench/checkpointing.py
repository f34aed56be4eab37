"""Checkpoints a long run can rely on: written atomically, and written often enough to resume.

- `AtomicCheckpointIO` writes a checkpoint to a temporary file beside its target (same folder,
  so the same filesystem), fsyncs it, then renames it over the target with `os.replace`. A reader,
  or a run resumed after kill -9, power loss or a full disk, sees the previous complete file or
  the new complete file, never a truncated one. (Lightning's default serialises into memory and
  moves the file from the system temp dir, across filesystems: not atomic.)
- `RunCheckpoint` is Lightning's ModelCheckpoint (top-k / best-on-validation files as configured)
  that also writes `last.ckpt` at the end of every training epoch and, optionally, every N
  training batches, whatever `save_top_k` is. Lightning's own `save_last` only copies a top-k
  save, so with `save_top_k: 0` it wrote nothing until training ended.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from i2ibench.errors import UserError


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (disk full, read-only folder); the previous one is intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into `.<name>.<pid>.tmp` beside the target, fsync, `os.replace`, fsync the folder.

    Remote URLs (s3://, ...) keep Lightning's own writer: a rename there is a copy anyway.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
            fsync_folder(path.parent)  # the rename itself survives a power loss
        except (OSError, RuntimeError) as err:
            # torch.save reports a failed write on a file object as a RuntimeError raised while
            # closing its zip archive, with the OSError (ENOSPC, EROFS, ...) as its context.
            cause = os_error_in(err)
            if cause is None and isinstance(err, RuntimeError) and "write" not in str(err):
                raise
            reason = (cause.strerror or str(cause)) if cause is not None else str(err)
            raise CheckpointWriteError(
                f"could not write checkpoint {path}: {reason}; the previous checkpoint there is kept unchanged. "
                f"Free space or make {path.parent} writable, then resume with --ckpt_path last.") from err
        finally:
            if tmp.exists():
                tmp.unlink()


def os_error_in(err: BaseException) -> OSError | None:
    """The OSError behind an exception (itself, or in its cause / context chain), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some filesystems refuse fsync on folders; nothing more can be done
    finally:
        os.close(descriptor)


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that keeps `last.ckpt` current: at every training epoch end, and every
    `last_every_n_batches` training batches when that is > 0 (for long epochs).

    Args: those of ModelCheckpoint, plus
        last_every_n_batches: also write `last.ckpt` after every N-th training batch (counted over
            the whole run, so the cadence survives a resume); 0 writes it at epoch ends only.
            Not at the last batch of an epoch: the epoch-end save follows it, after the epoch's
            learning-rate step, and is the one to resume from.
    """

    def __init__(self, *args: Any, last_every_n_batches: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if last_every_n_batches < 0:
            raise ValueError(f"checkpoint.last_every_n_batches must be >= 0, got {last_every_n_batches}")
        self.last_every_n_batches = last_every_n_batches
        self._last_saves = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        saved_before = self._last_saves
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        every = self.last_every_n_batches
        batches_done = trainer.fit_loop.epoch_loop.total_batch_idx + 1
        last_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        if (every and batches_done % every == 0 and not last_of_epoch and self._saving_allowed(trainer)
                and self._last_saves == saved_before):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        saved_before = self._last_saves
        super().on_train_epoch_end(trainer, pl_module)
        # Lightning writes last.ckpt here only when a top-k file was saved at this step; a save at
        # this global step from an earlier hook would lack the epoch's end (its LR step).
        if self._saving_allowed(trainer) and self._last_saves == saved_before:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        """Always `last.ckpt`, overwritten in place (atomically, see AtomicCheckpointIO): Lightning's
        version counter would write `last-v1.ckpt` whenever the callback's state was not restored."""
        if self.save_last == "link":
            return super()._save_last_checkpoint(trainer, monitor_candidates)
        if not self.save_last:
            return
        self.last_model_path = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        self._save_checkpoint(trainer, self.last_model_path)
        self._last_saves += 1

    def _saving_allowed(self, trainer: pl.Trainer) -> bool:
        return bool(self.save_last) and not trainer.fast_dev_run and not trainer.sanity_checking \
            and trainer.state.fn == "fit"


def last_checkpoints(folder: Path) -> list[Path]:
    """`last.ckpt` (and Lightning's versioned `last-v1.ckpt`, ...) in a checkpoint folder."""
    return sorted(folder.glob("last*.ckpt")) if folder.is_dir() else []
