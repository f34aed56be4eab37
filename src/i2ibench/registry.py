"""Name -> object registries, so that configs, the CLI and the bench runner can name a part.

One `Registry` per kind (methods, generators, discriminators, datasets), one decorator each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from i2ibench.errors import UserError

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class UnknownNameError(UserError, KeyError):
    """A name that no registry entry has; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    """A name -> object table with a decorator to fill it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


@dataclass(frozen=True)
class MethodSpec:
    """A benchmarked method: its LightningModule class, its config and the data it needs.

    Several methods may share one class (the CycleGAN family): the config makes the variant.
    """

    name: str
    module_class: type
    description: str
    config: str  # file name under configs/methods/
    dataset_mode: str = "two-domain"  # "two-domain", "paired" (aligned pairs by file name), "multi-domain" or "mask"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return CONFIG_DIR / "methods" / self.config


METHODS: Registry[MethodSpec] = Registry("method")
GENERATORS: Registry[Callable[..., Any]] = Registry("generator")
DISCRIMINATORS: Registry[Callable[..., Any]] = Registry("discriminator")


def register_method(name: str, *, description: str, config: str | None = None,
                    dataset_mode: str = "two-domain") -> Callable[[type], type]:
    """Register a LightningModule class as method `name` (call once per variant)."""

    def add(cls: type) -> type:
        spec = MethodSpec(name, cls, description, config or f"{name}.yaml", dataset_mode)
        METHODS.register(name)(spec)
        return cls

    return add


register_generator = GENERATORS.register
register_discriminator = DISCRIMINATORS.register


def load_all() -> None:
    """Import every module that registers something (the registries fill on import)."""
    import i2ibench.methods  # noqa: F401
    import i2ibench.nets  # noqa: F401
