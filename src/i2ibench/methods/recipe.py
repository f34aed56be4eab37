"""The training recipe as it really runs: the global batch split across processes, and its summary.

A paper's recipe is stated for one process: StarGAN v2 trains 100k iterations of batch 8,
CycleGAN 200 epochs of batch 1. Under DDP every process loads its own batch and Lightning shards
each epoch's draws across the processes, so a per-process `data.batch_size` would multiply the
batch by the number of processes N and divide the iterations per epoch by N. i2ibench therefore
reads `data.batch_size` as the GLOBAL batch (all processes together) and gives each process
batch_size / N. Then one optimiser step is one iteration of the paper's recipe on any N:
iteration-based schedules (StarGAN v2's diversity decay) and epoch-based ones (CycleGAN's linear
decay) stay the same, and so does the number of samples seen after k steps.

A batch that cannot be split evenly is refused before training, except where the paper's batch
is 1 per sample (CycleGAN, InstaGAN): a batch of 1 cannot be split, so each process trains batch
1 and the global batch becomes N, at the batch-1 learning rate (not rescaled: neither paper gives
a rule, and the CycleGAN reference keeps the learning rate when it trains larger batches on
several GPUs). The summary printed at the start of fit says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from i2ibench.errors import ConfigError


@dataclass(frozen=True)
class BatchSplit:
    """How a configured global batch runs on `world_size` processes."""

    requested: int    # data.batch_size: the global batch the recipe asks for
    per_process: int  # what each process loads per step
    world_size: int

    @property
    def global_batch(self) -> int:
        """Samples per optimiser step, all processes together."""
        return self.per_process * self.world_size

    def describe(self) -> str:
        if self.world_size == 1:
            return f"batch {self.global_batch} (1 process)"
        text = f"global batch {self.global_batch} ({self.per_process} per process x {self.world_size} processes)"
        if self.global_batch != self.requested:
            text += f", not the configured {self.requested}: a batch of {self.requested} cannot be split"
        return text


def split_global_batch(requested: int, world_size: int, per_sample_recipe: bool = False) -> BatchSplit:
    """Per-process batch for a global batch of `requested` on `world_size` processes.

    `per_sample_recipe`: the method's recipe is batch 1 per sample (CycleGAN, InstaGAN); a global
    batch smaller than the process count then runs as batch 1 per process (global batch N).
    Anything else that does not divide evenly is a ConfigError naming the option and the fix.
    """
    if requested < 1:
        raise ConfigError(f"data.batch_size must be at least 1, got {requested}")
    if requested % world_size == 0:
        return BatchSplit(requested, requested // world_size, world_size)
    if per_sample_recipe and requested < world_size:
        return BatchSplit(requested, 1, world_size)
    divisors = [n for n in range(1, requested + 1) if requested % n == 0]
    raise ConfigError(f"data.batch_size {requested} is the global batch; it cannot be split evenly across "
                      f"{world_size} processes. Run on {', '.join(map(str, divisors))} processes, or set "
                      f"data.batch_size to a multiple of {world_size} (which changes the paper's recipe).")


def apply_global_batch(module: pl.LightningModule, per_sample_recipe: bool = False) -> BatchSplit | None:
    """Set the attached datamodule's per-process training batch from its global `batch_size`.

    Call from the method's `setup`: Lightning runs it after the datamodule's and before the training
    loader is built. Idempotent (the global batch is read from the datamodule's saved
    hyper-parameters, never from the value set here), so `fit` after `fit` stays right.
    Returns None when no datamodule with a `batch_size` is attached.
    """
    trainer = module.trainer
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None or not hasattr(datamodule, "batch_size"):
        return None
    requested = int(getattr(datamodule, "hparams", {}).get("batch_size", datamodule.batch_size))
    split = split_global_batch(requested, trainer.world_size, per_sample_recipe)
    datamodule.batch_size = split.per_process
    return split


def require_even_batch(split: BatchSplit | None, method: str, halves: str, origin: str) -> None:
    """Refuse a per-process batch that a method which halves each batch (BicycleGAN, DRIT++) cannot split."""
    if split is not None and split.per_process % 2:
        raise ConfigError(
            f"data.batch_size {split.requested} gives {split.per_process} image(s) per process on "
            f"{split.world_size}; {method} {halves}, so it needs an even number per process: set data.batch_size "
            f"to {2 * split.world_size} ({origin}'s 2 per process)")


def check_latent_size(datamodule, size: int, option: str, codes: str) -> None:
    """Refuse a datamodule whose @latent evaluation would draw codes of another size than the model takes."""
    latent = getattr(datamodule, "latent_dim", size)
    if latent != size:
        raise ConfigError(f"data.latent_dim ({latent}) must equal {option} ({size}): the @latent evaluation draws "
                          f"{codes} of that size")


def check_epoch_schedule(trainer: pl.Trainer, n_epochs: int, n_epochs_decay: int) -> None:
    """Refuse a run longer than its learning-rate schedule (the rate would be 0 after it)."""
    total, max_epochs = n_epochs + n_epochs_decay, trainer.max_epochs
    if max_epochs is not None and max_epochs > total:
        raise ConfigError(f"trainer.max_epochs ({max_epochs}) exceeds the schedule n_epochs + n_epochs_decay "
                          f"({total}): the learning rate would be 0 after epoch {total}. Set them consistently.")


def announce(trainer: pl.Trainer, method: str, lines: list[str], split: BatchSplit | None) -> None:
    """Print the effective recipe once, on rank 0, and warn when the global batch is not the configured one."""
    rank_zero_info(f"{method} recipe, as it runs here:\n" + "\n".join(f"  - {line}" for line in lines))
    if split is not None and split.global_batch != split.requested:
        rank_zero_warn(f"{method}: {split.describe()}. Each of the {split.world_size} processes trains batch "
                       f"{split.per_process}, so every step averages {split.global_batch} samples at the learning "
                       f"rate of batch {split.requested}; results are not the paper's single-process recipe.")


def total_steps(trainer: pl.Trainer) -> int | float:
    """Optimiser steps this fit will run (after `limit_train_batches`, `max_epochs`, `max_steps`)."""
    return trainer.estimated_stepping_batches


def epoch_schedule_lines(trainer: pl.Trainer, split: BatchSplit | None, n_epochs: int, n_epochs_decay: int,
                         learning_rates: str) -> list[str]:
    """The recipe of an epoch-scheduled method (the CycleGAN family, InstaGAN), for `announce`."""
    per_epoch = trainer.num_training_batches
    lines = [split.describe() if split else "batch: as the datamodule loads it",
             f"{per_epoch} steps per epoch (one pass over the training draws, shared by the processes); "
             f"max_epochs {trainer.max_epochs}: {total_steps(trainer)} steps",
             f"learning rate {learning_rates}: constant for {n_epochs} epochs, then linear decay to 0 over "
             f"{n_epochs_decay} (epochs count passes over the data, whatever the number of processes)"]
    if split is not None and split.global_batch != split.requested:
        lines.append(f"the learning rate is the one for batch {split.requested}, not rescaled for the global "
                     f"batch {split.global_batch}")
    return lines
