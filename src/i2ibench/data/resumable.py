"""A training DataLoader that a resumed run continues exactly where the killed one stopped.

Lightning restarts a run in an order that defeats epoch-seeded samplers: it creates the
training iterator (and, with workers, hands them the first indices) before it calls the
sampler's `set_epoch`, so the first resumed epoch replayed epoch 0's pairs, crops and flips; and
a plain DataLoader cannot skip what a mid-epoch checkpoint already trained on. This loader

- starts its iterator lazily, at the first batch requested, when Lightning has set the epoch;
- is "stateful" for Lightning (`state_dict` / `load_state_dict`, saved with the fit loop in
  every checkpoint): it records the epoch and the number of batches handed out, and after a
  resume skips those batches of that epoch at the index level (no image is read for them);
- draws its workers' base seed from its own generator, seeded by (run seed, epoch), instead
  of the global RNG, so loading data never moves the global RNG that a checkpoint restores.

Under DDP Lightning wraps the sampler (DistributedSamplerWrapper, which forwards `set_epoch`);
each process skips its own consumed batches, which are the same count on every process.
"""

from __future__ import annotations

from itertools import islice
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader


class ResumableDataLoader(DataLoader):
    """DataLoader + exact resume (see the module docstring). Construct it as a DataLoader."""

    _resume: dict | None = None  # the position restored from a checkpoint, used by the next iterator
    _skip_now = 0  # batches the index sampler drops while the torch iterator is being created
    _position = {"epoch": 0, "batches": 0}  # the epoch and batches handed out by the current iterator

    def state_dict(self) -> dict[str, int]:
        return dict(self._position)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}

    def __iter__(self) -> Iterator[Any]:
        return self._batches()  # a generator: nothing runs until Lightning asks for the first batch

    def _batches(self) -> Iterator[Any]:
        epoch = sampler_epoch(self)
        resume, self._resume = self._resume, None
        skip = resume["batches"] if resume is not None and resume["epoch"] == epoch else 0
        self._position = {"epoch": epoch, "batches": skip}
        self.generator = torch.Generator().manual_seed(worker_seed(epoch))
        self._skip_now = skip
        try:
            iterator = super().__iter__()  # torch creates (or resets) its iterator: indices are drawn now
        finally:
            self._skip_now = 0
        for batch in iterator:
            self._position = {"epoch": epoch, "batches": self._position["batches"] + 1}
            yield batch

    @property
    def _index_sampler(self):
        return _SkipFirst(super()._index_sampler, self)


class _SkipFirst:
    """The loader's batch sampler without its first `loader._skip_now` entries (read at `iter`)."""

    def __init__(self, sampler, loader: ResumableDataLoader) -> None:
        self.sampler, self.loader = sampler, loader

    def __iter__(self):
        return islice(iter(self.sampler), self.loader._skip_now, None)

    def __len__(self) -> int:
        return len(self.sampler)


def sampler_epoch(loader: DataLoader) -> int:
    """The epoch Lightning last set on the loader's sampler (0 for samplers without epochs)."""
    for sampler in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
        if isinstance(getattr(sampler, "epoch", None), int):
            return sampler.epoch
    return 0


def worker_seed(epoch: int) -> int:
    """A per-epoch seed from the run's seed (torch.initial_seed(), set by seed_everything)."""
    return (torch.initial_seed() * 1_000_003 + epoch) % (2**63)
