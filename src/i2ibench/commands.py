"""The `i2ibench` verbs that are not Lightning runs: each parses its own arguments."""

from __future__ import annotations

from typing import Callable

VERBS: dict[str, Callable[[list[str]], int | None]] = {}
