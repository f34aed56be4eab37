"""The U-Net generator of Pix2Pix (Isola et al. 2017, sec. 3.1 and appendix 6.1.1).

An encoder-decoder whose i-th decoder layer also sees the i-th encoder layer's output (skip
connections by concatenation). Structure and layer options as the reference's `UnetGenerator`
/ `UnetSkipConnectionBlock` (junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py): each
level halves the resolution with a 4x4 stride-2 conv and doubles it back with a 4x4 stride-2
transposed conv; widths ngf, 2ngf, 4ngf, then 8ngf for every further level; LeakyReLU 0.2 down,
ReLU up, tanh out; no norm on the outermost down conv nor on the innermost level's down conv
(its output is 1x1); dropout 0.5 after the up path of the `num_downs - 5` 8ngf levels next to
the innermost one. `num_downs` follows the image size: 2**num_downs pixels become 1x1
(unet_256: 8, unet_128: 7, 64 px: 6).

Test-time noise: Pix2Pix keeps dropout at inference (its only noise source). `seeded_dropout`
makes that noise a function of a given generator, so evaluation is repeatable and independent
of batch size, device and sharding; `batch_statistics` normalises with each forward's own
statistics (the paper's test-time batch norm) without touching the running averages.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from i2ibench.nets.init import init_normal
from i2ibench.nets.norms import conv_bias, norm_layer
from i2ibench.registry import register_generator

DROPOUT = 0.5  # the reference's nn.Dropout(0.5)


class NoiseDropout(nn.Dropout):
    """nn.Dropout that, while `generator` is set, draws its mask from that (CPU) generator.

    Outside `seeded_dropout` it is plain nn.Dropout (training draws from the global RNG, which
    seed_everything and the checkpoints' RNG states make reproducible).
    """

    generator: torch.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.generator is None or self.p == 0:
            return super().forward(x)
        keep = torch.empty(x.shape, dtype=torch.float32).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep.to(device=x.device, dtype=x.dtype) / (1.0 - self.p)


class UnetLevel(nn.Module):
    """One level: down conv -> (the inner levels) -> up conv, its input concatenated to its output.

    `inner` is None for the innermost level; `outermost` takes the image in and gives it out (tanh).
    """

    def __init__(self, outer_channels: int, inner_channels: int, inner: nn.Module | None = None,
                 in_channels: int | None = None, outermost: bool = False, norm: str = "batch",
                 dropout: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        down_conv = nn.Conv2d(in_channels or outer_channels, inner_channels, 4, stride=2, padding=1, bias=bias)
        up_in = inner_channels if inner is None else inner_channels * 2  # inner levels return input + output
        if outermost:
            layers = [down_conv, inner, nn.ReLU(True),
                      nn.ConvTranspose2d(up_in, outer_channels, 4, stride=2, padding=1), nn.Tanh()]
        elif inner is None:  # innermost: no norm on its 1x1 code
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.ReLU(True),
                      nn.ConvTranspose2d(up_in, outer_channels, 4, stride=2, padding=1, bias=bias),
                      make_norm(outer_channels)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down_conv, make_norm(inner_channels), inner, nn.ReLU(True),
                      nn.ConvTranspose2d(up_in, outer_channels, 4, stride=2, padding=1, bias=bias),
                      make_norm(outer_channels)]
            if dropout:
                layers.append(NoiseDropout(DROPOUT))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.outermost:
            return self.body(x)
        return torch.cat([x, self.body(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net with `num_downs` levels (Pix2Pix: 8 for 256 px); inputs must be multiples of 2**num_downs.

    Args:
        in_channels, out_channels: image channels in and out.
        num_downs: downsamplings; 2**num_downs pixels become 1x1 at the innermost level (at least 5).
        ngf: channels of the outermost level (64 in Pix2Pix).
        norm: batch (Pix2Pix), instance or none.
        dropout: dropout 0.5 in the `num_downs - 5` 8ngf levels next to the innermost (Pix2Pix: on).
        init_gain: std of the N(0, init_gain) initialisation (the reference's `--init_gain 0.02`).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, num_downs: int = 8, ngf: int = 64,
                 norm: str = "batch", dropout: bool = True, init_gain: float = 0.02) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"a U-Net needs num_downs >= 5 (ngf..8ngf takes 5 levels), got {num_downs}")
        self.num_downs = num_downs
        level = UnetLevel(ngf * 8, ngf * 8, norm=norm)
        for _ in range(num_downs - 5):
            level = UnetLevel(ngf * 8, ngf * 8, level, norm=norm, dropout=dropout)
        for mult in (4, 2, 1):
            level = UnetLevel(ngf * mult, ngf * mult * 2, level, norm=norm)
        self.body = UnetLevel(out_channels, ngf, level, in_channels=in_channels, outermost=True, norm=norm)
        init_normal(self, init_gain)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (each level halves them)."""
        return 2**self.num_downs

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


@contextmanager
def seeded_dropout(module: nn.Module, generator: torch.Generator) -> Iterator[None]:
    """Dropout active in `module`, its masks drawn from `generator` (the test-time noise of Pix2Pix)."""
    layers = [m for m in module.modules() if isinstance(m, NoiseDropout)]
    saved = [(m.training, m.generator) for m in layers]
    for m in layers:
        m.train()
        m.generator = generator
    try:
        yield
    finally:
        for m, (training, gen) in zip(layers, saved):
            m.train(training)
            m.generator = gen


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """Batch norm normalises by the statistics of the batch it sees, leaving its running averages untouched."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in layers]
    for m in layers:
        # training=True selects batch statistics; track_running_stats=False keeps the buffers out of it.
        m.training, m.track_running_stats = True, False
    try:
        yield
    finally:
        for m, (training, track) in zip(layers, saved):
            m.training, m.track_running_stats = training, track


register_generator("unet")(UnetGenerator)
