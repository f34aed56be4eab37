"""CBAM attention (Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018)
and the attention-residual generator of SRAGAN (Wang 2021, "GAN translation from sketch to real
image based on perceptual attention and latent space regularization", master's thesis).

CBAM refines a feature map twice, channel attention first, then spatial attention (paper sec. 3,
"sequential, channel-first" is its best arrangement, table 3):
- channel: sigmoid(MLP(avg-pool(F)) + MLP(max-pool(F))), the MLP shared by both descriptors, one
  hidden layer of C / r units with ReLU, r = 16 (paper eq. 2, sec. 4.1);
- spatial: sigmoid(conv7x7([mean over channels; max over channels])) (paper eq. 3, table 2);
and sits in a residual block on the residual branch, before the addition (paper fig. 3).

Details the CBAM paper's equations leave to its code (Jongchan/attention-module, MODELS/cbam.py):
the MLP layers have biases (as there); the 7x7 spatial conv has a bias and no batch norm (the
paper's eq. 3; the official code adds batch norm, which would make an image's translation depend
on the other images of its batch, so our choice is the equation); the two spatial descriptors are
stacked [mean; max] as in eq. 3 (the code stacks [max; mean]: the same family, the order only
permutes the conv's input channels).

SRAGAN's thesis is not public beyond its abstract; no code exists. The generator is the CycleGAN
ResNet generator (nets/resnet.py) with CBAM in every residual block and a shortcut from the input
image to the output (issue 13, item 4). Our choices, each with its reason:
- encoder / decoder / widths / depth: the CycleGAN ResNet generator's (ngf 64, 9 blocks at 256 px,
  instance norm), which this architecture extends; residual blocks exactly as there plus CBAM.
- the input shortcut: `tanh(decoder(...) + input)` (a global residual before the output tanh, the
  input projected by a 1x1 conv when the channel counts differ). The sketch's lines reach the
  output unchanged, so the body learns what to add (colour, texture); the tanh keeps outputs in
  [-1, 1] like every generator of the suite.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from i2ibench.nets.init import init_normal
from i2ibench.nets.resnet import ResnetBlock, resnet_decoder, resnet_encoder
from i2ibench.registry import register_generator

REDUCTION = 16  # CBAM sec. 4.1: reduction ratio r = 16
SPATIAL_KERNEL = 7  # CBAM table 2: 7x7 beats 3x3 for the spatial map


class ChannelAttention(nn.Module):
    """Weights each channel by sigmoid(MLP(avg-pool) + MLP(max-pool)); one MLP for both descriptors."""

    def __init__(self, channels: int, reduction: int = REDUCTION) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)  # at least one unit, for narrow test networks
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def weights(self, x: Tensor) -> Tensor:
        """The N x C x 1 x 1 channel attention map, in (0, 1)."""
        logits = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return torch.sigmoid(logits)[:, :, None, None]

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weights(x)


class SpatialAttention(nn.Module):
    """Weights each position by sigmoid(conv([mean over channels; max over channels]))."""

    def __init__(self, kernel_size: int = SPATIAL_KERNEL) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"the spatial attention kernel must be odd (same-size map), got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def weights(self, x: Tensor) -> Tensor:
        """The N x 1 x H x W spatial attention map, in (0, 1)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weights(x)


class CBAM(nn.Module):
    """Channel attention, then spatial attention on its output (CBAM's sequential channel-first order)."""

    def __init__(self, channels: int, reduction: int = REDUCTION, spatial_kernel: int = SPATIAL_KERNEL) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(spatial_kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial(self.channel(x))


class AttentionResnetBlock(ResnetBlock):
    """The CycleGAN residual block with CBAM on its residual branch, before the addition (CBAM fig. 3)."""

    def __init__(self, channels: int, norm: str = "instance", dropout: bool = False, reduction: int = REDUCTION,
                 spatial_kernel: int = SPATIAL_KERNEL) -> None:
        super().__init__(channels, norm, dropout)
        self.attention = CBAM(channels, reduction, spatial_kernel)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.attention(self.body(x))


class AttentionResnetGenerator(nn.Module):
    """Encoder, `n_blocks` CBAM residual blocks, decoder, and a shortcut from input to output.

    Args:
        in_channels, out_channels: image channels in and out.
        ngf: channels after the stem (the blocks run at 4 * ngf at 1/4 resolution).
        n_blocks: attention-residual blocks (9 at 256 px, 6 at 128, as CycleGAN's ResNet generator).
        norm: instance (CycleGAN), batch or none.
        dropout: dropout 0.5 inside each residual block (CycleGAN's `--no_dropout` off switch).
        reduction: CBAM's MLP reduction ratio r (16).
        spatial_kernel: CBAM's spatial-attention conv size (7).
        input_shortcut: add the input image (1x1-projected if channels differ) before the output tanh.
    """

    size_multiple = 4  # two stride-2 downsamples: the shortcut needs the output at the input's size

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", dropout: bool = False, reduction: int = REDUCTION,
                 spatial_kernel: int = SPATIAL_KERNEL, input_shortcut: bool = True) -> None:
        super().__init__()
        self.encoder = resnet_encoder(in_channels, ngf, norm)
        self.transformer = nn.Sequential(*(AttentionResnetBlock(4 * ngf, norm, dropout, reduction, spatial_kernel)
                                           for _ in range(n_blocks)))
        decoder = resnet_decoder(out_channels, ngf, norm)
        self.decoder = decoder[:-1]  # without its tanh: the shortcut is added before it
        self.shortcut: nn.Module | None = None
        if input_shortcut:
            self.shortcut = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        init_normal(self)  # N(0, 0.02) as the CycleGAN generators, the attention layers included

    def forward(self, x: Tensor) -> Tensor:
        out = self.decoder(self.transformer(self.encoder(x)))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return torch.tanh(out)


register_generator("attention-resnet")(AttentionResnetGenerator)
