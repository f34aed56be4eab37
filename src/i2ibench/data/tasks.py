"""Evaluation tasks: named translation directions.

Two-domain tasks are `A2B` and `B2A`; multi-domain tasks are `<source>-><target>@<mode>` with
mode `latent` or `reference` (e.g. `cat->dog@latent`: K outputs per source, one per style), or
`<source>-><target>` for methods that translate by the target label alone (StarGAN: one output per
source; its mode is `label`). The datamodule, the methods and the evaluation callback agree on tasks
by these names alone.
"""

from __future__ import annotations

from typing import NamedTuple


class Task(NamedTuple):
    name: str
    source: str
    target: str
    mode: str | None = None  # multi-domain: "latent", "reference" (K styles per source) or "label" (one output)

    @property
    def styled(self) -> bool:
        """Whether each source is translated K times (one per latent or reference): LPIPS diversity applies."""
        return self.mode in STYLE_MODES


STYLE_MODES = ("latent", "reference")


def parse_task(name: str) -> Task:
    if "->" in name:
        pair, at, mode = name.partition("@")
        source, _, target = pair.partition("->")
        if not at:
            mode = "label"
        if not (source and target and (mode in STYLE_MODES or (mode == "label" and not at))):
            raise ValueError(f"bad task {name!r}; expected <source>-><target>, or with @latent or @reference")
        return Task(name, source, target, mode)
    if len(name) == 3 and name[1] == "2":
        return Task(name, name[0], name[2])
    raise ValueError(f"bad task {name!r}; expected A2B, B2A or <source>-><target>[@latent|@reference]")


def two_domain_tasks() -> list[str]:
    return ["A2B", "B2A"]


def rename_domains(task: str, names: dict[str, str]) -> str:
    """`task` with its domains renamed, e.g. A->B@latent as cat->dog@latent for a model trained on one pair
    of a multi-domain dataset. A two-domain task (A2B) becomes the label-mode name `cat->dog`: one output
    per source, as StarGAN's tasks."""
    spec = parse_task(task)
    source, target = names.get(spec.source, spec.source), names.get(spec.target, spec.target)
    return f"{source}->{target}" + (f"@{spec.mode}" if spec.styled else "")
