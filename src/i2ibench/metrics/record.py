"""The evaluation record: one JSON per (run, checkpoint), the only input of result tables."""

from __future__ import annotations

import datetime as dt
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA = "i2ibench.eval/1"


@lru_cache(maxsize=1)
def git_revision() -> dict[str, Any]:
    """The commit of the i2ibench checkout that produced a number, and whether it had local changes."""
    repo = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                    capture_output=True, text=True, check=True, timeout=10).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def build_record(*, dataset: dict, method: str, config: dict, seed: int | None, step: int | None,
                 epoch: int | None, checkpoint: dict, protocol: dict, metrics: dict, unavailable: dict,
                 timings: dict) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset, "method": method, "seed": seed, "git": git_revision(),
        "step": step, "epoch": epoch, "checkpoint": checkpoint,
        "protocol": protocol, "metrics": metrics, "unavailable": unavailable, "timings": timings,
        "config": config,
    }
