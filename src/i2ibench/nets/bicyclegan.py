"""The networks of BicycleGAN (Zhu et al. 2017, "Toward Multimodal Image-to-Image Translation").

Facts from the reference, junyanz/BicycleGAN models/networks.py, at its defaults (`--netG unet_256
--where_add all --netE resnet_256 --netD basic_256_multi --num_Ds 2 --norm instance --nl relu
--upsample basic --init_type xavier --init_gain 0.02`):

- `LatentUnetGenerator` (G_Unet_add_all / UnetBlock_with_z): a U-Net whose every level's down conv
  sees its input concatenated with the latent z tiled over the image (z "added at every layer").
  Every conv has a bias (the reference does not drop it before a norm); LeakyReLU 0.2 down, `nl`
  up, tanh out; no norm on the outermost level nor on the innermost level's down path; optional
  dropout 0.5 after the up path of the 8ngf levels next to the innermost. Each level returns its
  up-path output concatenated with its input (in that order).
- `LatentEncoder` (E_ResNet): a 4x4 stride-2 conv, `n_blocks - 1` residual blocks that halve the
  size (norm, LeakyReLU, 3x3 conv, norm, LeakyReLU, 3x3 conv + 2x2 average pool; shortcut: pool +
  1x1 conv), widths nef * min(4, n + 1), LeakyReLU, average pool, then two linear heads: mu and
  log-variance of z.
- `MultiScalePatchDiscriminator` (D_NLayersMulti): `num_D` PatchGANs, the i-th with ndf / 2**i
  channels on the image average-pooled i times (3x3, stride 2, padding 1, padding not counted).
- `init_xavier`: xavier_normal with gain 0.02 on conv and linear weights, zero biases, batch norm
  N(1, 0.02) (the reference's init_weights with --init_type xavier).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from i2ibench.nets.init import init_normal
from i2ibench.nets.norms import norm_layer
from i2ibench.nets.patchgan import PatchDiscriminator

NONLINEARITIES: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(True), "lrelu": lambda: nn.LeakyReLU(0.2, True), "elu": lambda: nn.ELU(inplace=True),
}
UPSAMPLES = ("basic", "bilinear")
INIT_TYPES = ("xavier", "normal")


def init_xavier(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """xavier_normal(gain) conv / linear weights, zero biases; batch norm weights N(1, gain), zero biases."""

    def init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    module.apply(init)
    return module


def initialise(module: nn.Module, init_type: str, gain: float) -> nn.Module:
    if init_type == "xavier":
        return init_xavier(module, gain)
    if init_type == "normal":
        return init_normal(module, gain)
    raise ValueError(f"unknown init_type {init_type!r}; use one of {', '.join(INIT_TYPES)}")


def _nonlinearity(name: str) -> Callable[[], nn.Module]:
    if name not in NONLINEARITIES:
        raise ValueError(f"unknown nl {name!r}; use one of {', '.join(NONLINEARITIES)}")
    return NONLINEARITIES[name]


def _up_layers(in_channels: int, out_channels: int, upsample: str) -> list[nn.Module]:
    """x2 upsampling: a 4x4 stride-2 transposed conv (`basic`) or bilinear + reflection pad + 3x3 conv."""
    if upsample == "basic":
        return [nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)]
    if upsample == "bilinear":
        return [nn.Upsample(scale_factor=2, mode="bilinear"), nn.ReflectionPad2d(1),
                nn.Conv2d(in_channels, out_channels, 3)]
    raise ValueError(f"unknown upsample {upsample!r}; use one of {', '.join(UPSAMPLES)}")


def tile(z: Tensor, like: Tensor) -> Tensor:
    """z (N x nz) as an N x nz x H x W map of constant planes, H x W those of `like`."""
    return z.view(z.shape[0], z.shape[1], 1, 1).expand(-1, -1, like.shape[2], like.shape[3])


class LatentUnetLevel(nn.Module):
    """One U-Net level whose down conv also sees z; `inner` is None for the innermost level."""

    def __init__(self, in_channels: int, outer_channels: int, inner_channels: int, nz: int,
                 inner: "LatentUnetLevel | None" = None, outermost: bool = False, norm: str = "instance",
                 nl: str = "relu", dropout: bool = False, upsample: str = "basic") -> None:
        super().__init__()
        self.outermost, self.nz = outermost, nz
        make_norm = None if norm == "none" else norm_layer(norm)
        down: list[nn.Module] = [nn.Conv2d(in_channels + nz, inner_channels, 4, stride=2, padding=1)]
        up: list[nn.Module] = [_nonlinearity(nl)()]
        if outermost:
            up += _up_layers(inner_channels * 2, outer_channels, upsample) + [nn.Tanh()]
        elif inner is None:  # innermost: its 1x1 code is not normalised
            down.insert(0, nn.LeakyReLU(0.2, True))
            up += _up_layers(inner_channels, outer_channels, upsample)
            up += [make_norm(outer_channels)] if make_norm else []
        else:
            down = [nn.LeakyReLU(0.2, True), *down] + ([make_norm(inner_channels)] if make_norm else [])
            up += _up_layers(inner_channels * 2, outer_channels, upsample)
            up += [make_norm(outer_channels)] if make_norm else []
            up += [nn.Dropout(0.5)] if dropout else []
        self.down, self.inner, self.up = nn.Sequential(*down), inner, nn.Sequential(*up)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        h = self.down(torch.cat([x, tile(z, x)], 1) if self.nz > 0 else x)
        out = self.up(h if self.inner is None else self.inner(h, z))
        return out if self.outermost else torch.cat([out, x], 1)


class LatentUnetGenerator(nn.Module):
    """G(x, z): U-Net with z concatenated to the input of every level (BicycleGAN's `where_add all`).

    Args:
        in_channels, out_channels: image channels.
        nz: latent size (8).
        num_downs: levels; 2**num_downs pixels become 1x1 (unet_256: 8, unet_128: 7, 64 px: 6).
            The reference builds at least 6 levels; 5 (for 32 px) is allowed here for small tests.
        ngf: width of the outermost level (64).
        norm: instance (the reference's default), batch or none. nl: up-path non-linearity (relu).
        dropout: dropout 0.5 in the num_downs - 5 8ngf levels (the reference's --use_dropout, off by default).
        upsample: basic (transposed conv) or bilinear.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, nz: int = 8, num_downs: int = 8,
                 ngf: int = 64, norm: str = "instance", nl: str = "relu", dropout: bool = False,
                 upsample: str = "basic", init_type: str = "xavier", init_gain: float = 0.02) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"a U-Net needs num_downs >= 5 (ngf..8ngf takes 5 levels), got {num_downs}")
        self.nz, self.num_downs = nz, num_downs
        options = dict(norm=norm, nl=nl, upsample=upsample)
        level = LatentUnetLevel(ngf * 8, ngf * 8, ngf * 8, nz, **options)
        for _ in range(num_downs - 5):
            level = LatentUnetLevel(ngf * 8, ngf * 8, ngf * 8, nz, level, dropout=dropout, **options)
        for mult in (4, 2, 1):
            level = LatentUnetLevel(ngf * mult, ngf * mult, ngf * mult * 2, nz, level, **options)
        self.body = LatentUnetLevel(in_channels, out_channels, ngf, nz, level, outermost=True, **options)
        initialise(self, init_type, init_gain)

    @property
    def size_multiple(self) -> int:
        return 2**self.num_downs

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.body(x, z)


class ResidualDownBlock(nn.Module):
    """The encoder's BasicBlock: a pre-activation residual block that halves the size."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        make_norm = (lambda c: nn.Identity()) if norm == "none" else norm_layer(norm)
        self.conv = nn.Sequential(
            make_norm(in_channels), nn.LeakyReLU(0.2, True), nn.Conv2d(in_channels, in_channels, 3, padding=1),
            make_norm(in_channels), nn.LeakyReLU(0.2, True), nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.AvgPool2d(2, 2))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) + self.shortcut(x)


class LatentEncoder(nn.Module):
    """E(B) -> (mu, logvar) of z: the reference's E_ResNet with vaeLike (resnet_256: n_blocks 5).

    The reference ends with AvgPool2d(8), a global pool exactly at its sizes (8 x 8 maps: 256 px
    with 5 blocks, 128 px with 4); a global average pool here gives the same numbers there and also
    works at other sizes (64 px smoke runs), with the same parameters.
    """

    def __init__(self, in_channels: int = 3, nz: int = 8, nef: int = 64, n_blocks: int = 5, norm: str = "instance",
                 init_type: str = "xavier", init_gain: float = 0.02) -> None:
        super().__init__()
        if n_blocks < 2:
            raise ValueError(f"the encoder needs n_blocks >= 2, got {n_blocks}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, nef, 4, stride=2, padding=1)]
        for n in range(1, n_blocks):
            layers.append(ResidualDownBlock(nef * min(4, n), nef * min(4, n + 1), norm))
        width = nef * min(4, n_blocks)
        self.conv = nn.Sequential(*layers, nn.LeakyReLU(0.2, True), nn.AdaptiveAvgPool2d(1))
        self.fc_mu, self.fc_logvar = nn.Linear(width, nz), nn.Linear(width, nz)
        self.downsamplings = n_blocks
        initialise(self, init_type, init_gain)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.conv(x).flatten(1)
        return self.fc_mu(features), self.fc_logvar(features)


class MultiScalePatchDiscriminator(nn.Module):
    """`num_D` PatchGANs on the image at 1, 1/2, ... scale; the i-th has ndf / 2**i channels.

    Returns the list of their patch maps (the GAN loss sums over them).
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, num_D: int = 2,
                 norm: str = "instance", init_type: str = "xavier", init_gain: float = 0.02) -> None:
        super().__init__()
        self.scales = nn.ModuleList(
            PatchDiscriminator(in_channels, int(round(ndf / 2**i)), n_layers, norm) for i in range(num_D))
        self.down = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        initialise(self, init_type, init_gain)  # replaces PatchDiscriminator's N(0, 0.02) by the reference's init

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for i, scale in enumerate(self.scales):
            if i > 0:
                x = self.down(x)
            outputs.append(scale(x))
        return outputs
