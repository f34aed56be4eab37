"""i2ibench.allocator: kept, freed memory is reused without new page faults; released, it goes back
to the kernel and glibc maps large blocks afresh again; the Evaluator holds it from begin to finish.

The page-fault cases run in fresh interpreters: the policy is process-wide.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import inception_weights

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the policy is glibc's (Linux)")

# A forward pass in miniature: layers whose outputs (25-200 MB, above glibc's 32 MB mmap ceiling)
# are made from the previous layer's, run as batches. Count the page faults of the later batches:
# the earlier batches' pages are either reused or fetched from the kernel anew.
FAULTS_OF_REUSE = """
import json, resource, sys, threading
import torch
from i2ibench import allocator
mode = sys.argv[1]

def batch():
    x = torch.ones(50 * 2**18)  # 50 MB of float32
    for megabytes in (200, 100, 150, 25, 120, 60):
        x = x.sum() + torch.empty(megabytes * 2**18).fill_(1.0)
    print(float(x[0]), file=sys.stderr)  # something small allocated between batches, as a real loop does

def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024

held = allocator.keep_freed_memory() if mode != "default" else False
for _ in range(6):  # warm-up: within a few batches the heap grows to what a batch needs
    batch()
kept_rss = rss_mb()
if mode == "released":
    allocator.release_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
released_rss = rss_mb()
for _ in range(3):
    batch()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
worker = threading.Thread(target=batch)  # another thread's arena cannot mmap: it must still work
worker.start(); worker.join()
print(json.dumps({"held": held, "in_force": allocator.in_force(), "faults": faults,
                  "kept_rss_mb": kept_rss, "released_rss_mb": released_rss}))
"""
BATCH_PAGES = (50 + 200 + 100 + 150 + 25 + 120 + 60) * 2**20 // 4096


def faults_of_reuse(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", FAULTS_OF_REUSE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kept_memory_is_reused_without_page_faults_and_released_memory_is_returned():
    default, kept, released = (faults_of_reuse(mode) for mode in ("default", "kept", "released"))
    assert not default["in_force"] and kept["held"] and kept["in_force"] and not released["in_force"]
    assert default["faults"] > 3 * BATCH_PAGES // 2, default  # glibc's default: unmapped at free, faulted in again
    # Kept in the heap and reused; the heap may still grow now and then (fragmentation: up to 100 MB
    # of 3 x 705 MB was seen), so the bound is a tenth of the default's faults, not zero.
    assert kept["faults"] < default["faults"] // 10, (kept, default)
    # Released: the kept heap goes back to the kernel, and large blocks are mapped afresh again. Not
    # every block: some are served from free space left inside the heap, so 3 batches faulted 398k to
    # 1M pages (default: about 1M); more than one whole batch's pages tells released from kept (0-25k).
    assert released["released_rss_mb"] < released["kept_rss_mb"] - 200, released
    assert released["faults"] > BATCH_PAGES, (released, default)


def test_freed_memory_kept_nests_under_its_holder():
    from i2ibench import allocator

    assert not allocator.in_force()
    with allocator.freed_memory_kept():
        assert allocator.in_force()
        with allocator.freed_memory_kept():  # held already: the inner block must not release it
            pass
        assert allocator.in_force()
    assert not allocator.in_force()


@pytest.mark.skipif(inception_weights() is None, reason="no offline Inception weights (../shared/weights)")
def test_the_evaluator_holds_it_from_begin_to_finish_and_for_real_features(tmp_path):
    from i2ibench import allocator
    from i2ibench.metrics.evaluator import Evaluator

    evaluator = Evaluator(str(inception_weights()), lpips="off")
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    paths = [tmp_path / f"{i}.png" for i in range(4)]  # the feature cache keys on the files themselves
    for path in paths:
        path.write_bytes(b"an image")
    batches = lambda: [{"image": images, "index": torch.arange(4)}]  # noqa: E731 - the callable real_features takes

    assert not allocator.in_force()
    real, _ = evaluator.real_features(paths, 32, batches)  # on its own: held, released
    assert not allocator.in_force()
    evaluator.begin({"images": ()}, {"images": 4})
    assert allocator.in_force()
    evaluator.update("images", torch.arange(4), images.flip(0))
    evaluator.real_features(paths, 32, batches)
    assert allocator.in_force()  # inside begin..finish it stays with the evaluation
    metrics, _ = evaluator.finish({"images": real})
    assert not allocator.in_force()
    assert metrics["images"]["fid"] is not None


@pytest.mark.skipif(inception_weights() is None, reason="no offline Inception weights (../shared/weights)")
def test_numbers_do_not_depend_on_the_allocator(builtin_root, monkeypatch):
    """The policy only changes where freed memory goes: an evaluation without it gives the same record."""
    from i2ibench import allocator
    from i2ibench.metrics.folder_eval import evaluate_folders
    from i2ibench.metrics.suite import DistributionSettings

    def evaluate() -> dict:
        record = evaluate_folders(builtin_root / "testA", builtin_root / "testB", weights=str(inception_weights()),
                                  settings=DistributionSettings(bootstrap_resamples=0), lpips="off", batch_size=8)
        return record["metrics"]["images"]

    with_policy = evaluate()
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: False)
    without = evaluate()
    assert not allocator.in_force()
    assert with_policy == without
    assert with_policy["fid"] is not None and with_policy["kid_mean"] is not None
