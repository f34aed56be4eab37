"""The DenseNet-CycleGAN generator: dense blocks in place of the ResNet generator's residual blocks.

Du et al., "Image style transfer based on improved CycleGAN", Optics and Precision Engineering 27(8),
2019, replace the residual blocks of the CycleGAN generator with dense blocks (Huang et al. 2017,
"Densely connected convolutional networks") so that every layer of the transformer stage sees the
features of all earlier layers; the CycleGAN encoder, decoder and 70x70 PatchGAN stay as they are.

What comes from where:

- From Du et al.: only the structural change itself (dense blocks replace the residual blocks, the
  encoder / decoder / discriminator are CycleGAN's). The paper's text was not reachable from this
  project's sources, so its numbers (blocks, layers per block, growth rate, transition design) are
  not known here; every number below is our documented choice, not the paper's.
- From Huang et al. 2017: the composite layer norm-ReLU-3x3 conv (pre-activation order), the
  concatenation of every layer's k new maps onto its input (growth rate k), and the transition layer
  norm-ReLU-1x1 conv with compression factor theta = 0.5 (DenseNet-C). The transition's 2x2 average
  pooling is dropped: the transformer stage must keep the H/4 x W/4 resolution.
- From CycleGAN (Zhu et al. 2017, junyanz/pytorch-CycleGAN-and-pix2pix): instance norm without
  affine parameters, reflection padding before every 3x3 conv, conv biases as `conv_bias` decides,
  N(0, 0.02) initialisation.
- Our choices: one dense block per residual block it replaces (`n_blocks` = 9 at 256 px, 6 at 128 px,
  as for `resnet`); `layers_per_block` = 4 and `growth_rate` = ngf (64), so each block grows
  4*ngf -> 8*ngf channels and its transition compresses back to 4*ngf, exactly theta = 0.5, and the
  decoder is unchanged. At ngf = 64 this generator has 9,240,067 parameters, 81 % of the 9-block
  ResNet generator's 11,378,179 (one more layer per block would give 106 %, with theta != 0.5).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from i2ibench.nets.norms import conv_bias, norm_layer
from i2ibench.nets.resnet import EncoderTransformerDecoder, build_generator
from i2ibench.registry import register_generator


class DenseLayer(nn.Module):
    """norm-ReLU-3x3 conv producing `growth_rate` maps, concatenated onto the input (Huang et al. 2017)."""

    def __init__(self, in_channels: int, growth_rate: int, norm: str = "instance") -> None:
        super().__init__()
        self.body = nn.Sequential(
            norm_layer(norm)(in_channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(in_channels, growth_rate, 3, bias=conv_bias(norm)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.body(x)], dim=1)


class DenseBlock(nn.Module):
    """`n_layers` dense layers, then a norm-ReLU-1x1 transition back to the block's input width.

    The transition (without DenseNet's pooling) keeps the width at `channels`, so blocks stack and
    the CycleGAN decoder receives the 4*ngf channels it expects.
    """

    def __init__(self, channels: int, n_layers: int, growth_rate: int, norm: str = "instance") -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *(DenseLayer(channels + i * growth_rate, growth_rate, norm) for i in range(n_layers))
        )
        grown = channels + n_layers * growth_rate
        self.transition = nn.Sequential(
            norm_layer(norm)(grown), nn.ReLU(True), nn.Conv2d(grown, channels, 1, bias=conv_bias(norm)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.transition(self.layers(x))


@register_generator("densenet")
def densenet_generator(in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                       norm: str = "instance", layers_per_block: int = 4,
                       growth_rate: int | None = None) -> EncoderTransformerDecoder:
    """CycleGAN generator whose transformer stage is `n_blocks` dense blocks (Du et al. 2019).

    `growth_rate` None means ngf, which keeps layers_per_block * growth_rate = 4*ngf (compression
    0.5) at every width; see the module docstring for which defaults are ours.
    """
    if n_blocks < 1 or layers_per_block < 1:
        raise ValueError(f"densenet generator needs n_blocks >= 1 and layers_per_block >= 1, "
                         f"got {n_blocks} and {layers_per_block}")
    k = ngf if growth_rate is None else growth_rate
    if k < 1:
        raise ValueError(f"densenet generator needs growth_rate >= 1, got {k}")
    return build_generator(
        lambda c: nn.Sequential(*(DenseBlock(c, layers_per_block, k, norm) for _ in range(n_blocks))),
        in_channels, out_channels, ngf, norm,
    )
