"""The `i2ibench` verbs that are not Lightning runs: each parses its own arguments."""

from __future__ import annotations

from typing import Callable



def _eval(argv: list[str]) -> int:
    from i2ibench.metrics.folder_eval import main

    return main(argv)


VERBS: dict[str, Callable[[list[str]], int | None]] = {"eval": _eval}
