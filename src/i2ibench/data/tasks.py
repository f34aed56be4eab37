"""Evaluation tasks: named translation directions.

Two-domain tasks are `A2B` and `B2A`; multi-domain tasks are `<source>-><target>@<mode>` with
mode `latent` or `reference` (e.g. `cat->dog@latent`). The datamodule, the methods and the
evaluation callback agree on tasks by these names alone.
"""

from __future__ import annotations

from typing import NamedTuple


class Task(NamedTuple):
    name: str
    source: str
    target: str
    mode: str | None = None  # multi-domain: "latent" or "reference"


def parse_task(name: str) -> Task:
    if "->" in name:
        pair, _, mode = name.partition("@")
        source, _, target = pair.partition("->")
        if not (source and target and mode in ("latent", "reference")):
            raise ValueError(f"bad task {name!r}; expected <source>-><target>@latent or @reference")
        return Task(name, source, target, mode)
    if len(name) == 3 and name[1] == "2":
        return Task(name, name[0], name[2])
    raise ValueError(f"bad task {name!r}; expected A2B, B2A or <source>-><target>@<mode>")


def two_domain_tasks() -> list[str]:
    return ["A2B", "B2A"]
