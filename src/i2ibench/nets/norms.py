"""Normalisation layers by name, as the reference's `--norm` option chooses them."""

from __future__ import annotations

from typing import Callable

from torch import nn


def norm_layer(name: str) -> Callable[[int], nn.Module]:
    """`instance` is the CycleGAN default: no affine parameters, no running statistics."""
    if name == "instance":
        return lambda channels: nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if name == "batch":
        return lambda channels: nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if name == "none":
        return lambda channels: nn.Identity()
    raise ValueError(f"unknown norm {name!r}; use instance, batch or none")


def conv_bias(name: str) -> bool:
    """The reference gives convolutions a bias only when the norm after them has no shift of its own."""
    return name != "batch"
