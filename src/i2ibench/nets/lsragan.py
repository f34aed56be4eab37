"""LSRAGAN's generator: SRAGAN's attention-residual generator (nets/attention.py) taking a latent z.

LSRAGAN (Wang 2021, "GAN translation from sketch to real image based on perceptual attention and
latent space regularization", master's thesis) is public only as an abstract: it extends the
one-to-one SRAGAN with "latent code vectors" to get several outputs per sketch. Where z enters is
our choice, with these reasons:

- Not at the input. BicycleGAN's `where_add input` concatenates z, tiled over the image, to the
  generator's input; here that input goes through a reflection-padded conv and then instance norm.
  A constant plane stays a per-channel constant through that conv, and instance norm subtracts
  each channel's mean, so z would be removed exactly and every z would give the same image.
- After a normalisation, before a non-linearity: in every CBAM residual block, z (tiled) joins the
  output of the block's first instance norm, a 1x1 conv fuses the two, and the block's ReLU follows.
  The ReLU makes z's effect depend on the position, so the next instance norm keeps it. This is
  where DRIT's concatenation generator puts its attribute code (Lee et al. 2018, MisINSResBlock: z
  concatenated after each instance norm, then 1x1 convs and ReLUs); one injection per block, as
  BicycleGAN's `where_add all` injects z once per level ("z at every layer" of the body).
- Everything else is SRAGAN's generator unchanged: the CycleGAN encoder and decoder, CBAM on each
  block's residual branch, `tanh(decoder + input)` as the input shortcut, N(0, 0.02) init.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from i2ibench.nets.attention import CBAM, REDUCTION, SPATIAL_KERNEL
from i2ibench.nets.bicyclegan import tile
from i2ibench.nets.init import init_normal
from i2ibench.nets.norms import conv_bias, norm_layer
from i2ibench.nets.resnet import resnet_decoder, resnet_encoder


class LatentAttentionResnetBlock(nn.Module):
    """SRAGAN's CBAM residual block, with z fused (1x1 conv) between its first norm and its ReLU.

    Residual branch: pad, 3x3 conv, norm, [features; z] -> 1x1 conv, ReLU, (dropout), pad, 3x3 conv,
    norm, CBAM; added to the input.
    """

    def __init__(self, channels: int, nz: int, norm: str = "instance", dropout: bool = False,
                 reduction: int = REDUCTION, spatial_kernel: int = SPATIAL_KERNEL) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        self.conv1 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias),
                                   make_norm(channels))
        self.fuse = nn.Sequential(nn.Conv2d(channels + nz, channels, 1), nn.ReLU(True))  # no norm after: a bias
        tail: list[nn.Module] = [nn.Dropout(0.5)] if dropout else []
        self.conv2 = nn.Sequential(*tail, nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias),
                                   make_norm(channels))
        self.attention = CBAM(channels, reduction, spatial_kernel)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        h = self.conv1(x)
        h = self.fuse(torch.cat([h, tile(z, h)], 1))
        return x + self.attention(self.conv2(h))


class LatentAttentionResnetGenerator(nn.Module):
    """G(x, z): encoder, `n_blocks` latent CBAM residual blocks, decoder, input shortcut, tanh.

    Args:
        in_channels, out_channels: image channels in and out.
        nz: latent size (BicycleGAN's 8).
        ngf, n_blocks, norm, dropout, reduction, spatial_kernel, input_shortcut: as SRAGAN's
            AttentionResnetGenerator (ngf 64; 9 blocks at 256 px, 6 at 128; instance norm; CBAM r 16, 7x7).
    """

    size_multiple = 4  # two stride-2 downsamples: the shortcut needs the output at the input's size

    def __init__(self, in_channels: int = 3, out_channels: int = 3, nz: int = 8, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", dropout: bool = False, reduction: int = REDUCTION,
                 spatial_kernel: int = SPATIAL_KERNEL, input_shortcut: bool = True) -> None:
        super().__init__()
        if nz < 1:
            raise ValueError(f"the latent generator needs nz >= 1, got {nz} (SRAGAN's generator takes no z)")
        if n_blocks < 1:
            raise ValueError(f"the latent generator needs n_blocks >= 1 (z enters through the blocks), got {n_blocks}")
        self.nz = nz
        self.encoder = resnet_encoder(in_channels, ngf, norm)
        self.blocks = nn.ModuleList(LatentAttentionResnetBlock(4 * ngf, nz, norm, dropout, reduction, spatial_kernel)
                                    for _ in range(n_blocks))
        self.decoder = resnet_decoder(out_channels, ngf, norm)[:-1]  # without its tanh: the shortcut comes first
        self.shortcut: nn.Module | None = None
        if input_shortcut:
            self.shortcut = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        init_normal(self)  # N(0, 0.02), as SRAGAN's generator

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        h = self.encoder(x)
        for block in self.blocks:
            h = block(h, z)
        out = self.decoder(h)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return torch.tanh(out)
