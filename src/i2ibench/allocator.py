"""While an evaluation extracts features, keep freed memory for reuse instead of handing it back.

glibc serves every block above its mmap threshold (at most 32 MB) with a fresh `mmap` and
unmaps it at `free`. An Inception batch of 50 images at 299 px makes activations of 50-280 MB,
so every layer of every batch got new pages from the kernel, which zeroes each 4 KB page on
first touch: an evaluation of 100 + 100 images spent a quarter of its time in page faults (the
Inception forward ran at 14 images/s, 18 with this policy; `benchmarks/metrics_speed.py --profile`).
With mmap off and a high trim threshold, freed blocks stay in the heap and the next batch reuses
them; fragmentation raised the peak of a batch-50 Inception loop from 1.97 to 2.16 GB.

The Evaluator holds the policy from `begin` to `finish`, and `release_freed_memory()` then hands
the memory back (`malloc_trim`) and sets glibc's thresholds to the ceiling of its own adaptive
policy (mmap above 32 MB, trim above 64 MB; glibc raises them there as soon as a mapped block of
32 MB is freed, which a PyTorch process does early), since `mallopt` cannot restore the
adaptation itself (any call switches it off). So training and the scoring of a large N run
under glibc's own policy again: kept for good, the policy raised the peak of scoring 50k + 50k
features from 1.84 to 2.12 GB, past the 2 GB target of `benchmarks/metrics_memory.py` (released
before scoring, as now: 1.98 GB).
No package does this: jemalloc / tcmalloc need LD_PRELOAD before the process starts, and PyTorch
has no CPU caching allocator outside mobile builds. Linux with glibc only; elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from contextlib import contextmanager
from typing import Iterator

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameters (malloc.h)
KEEP_TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes: trim only above 2 GB of free heap top
# The ceiling of glibc's adaptive thresholds (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, trim twice that).
SETTLED_MMAP_THRESHOLD, SETTLED_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 32 * 2**20, 64 * 2**20, 65536

_held = False


@functools.cache  # one lookup per process: every evaluation keeps and releases
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


def keep_freed_memory() -> bool:
    """Freed memory stays in the heap for reuse until `release_freed_memory()`; True when in force."""
    global _held
    if not _held and (libc := _libc()) is not None:
        # mallopt returns 1 on success, 0 (changing nothing) where it is a stub
        _held = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD))
    return _held


def release_freed_memory() -> None:
    """Hand the kept memory back to the kernel and return to glibc's settled thresholds."""
    global _held
    if _held and (libc := _libc()) is not None:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_MMAP_THRESHOLD, SETTLED_MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, SETTLED_TRIM_THRESHOLD)
        libc.malloc_trim(0)
    _held = False


@contextmanager
def freed_memory_kept() -> Iterator[None]:
    """`keep_freed_memory()` for the block, unless it is held already (then its holder releases it)."""
    held_here = not _held and keep_freed_memory()
    try:
        yield
    finally:
        if held_here:
            release_freed_memory()


def in_force() -> bool:
    """Whether freed memory is being kept in this process now."""
    return _held
