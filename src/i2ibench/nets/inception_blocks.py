"""The Inception-CycleGAN generator: residual Inception modules in the transformer stage.

Ma, Zhang and Lu, "Image style transfer based on CycleGAN", Computer Knowledge and Technology, 2020,
combine Inception modules with residual blocks in the CycleGAN generator's transformer stage, so that
each block sees 1x1, 3x3 and 5x5 receptive fields side by side (multi-scale texture) while the
shortcut keeps the content path of the ResNet generator; encoder, decoder and 70x70 PatchGAN are
CycleGAN's.

What comes from where:

- From Ma et al.: only the structural change itself (Inception modules with residual shortcuts in
  the transformer stage). The paper's text was not reachable from this project's sources, so its
  numbers (module count, branch widths, pooling type) are not known here; every number below is
  our documented choice, not the paper's.
- From Szegedy et al. 2015 (GoogLeNet, Table 1, module "inception (3a)", 256 output channels): the
  four branches 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 pool -> 1x1 and their widths 64 | 96 -> 128 |
  16 -> 32 | 32, which sum to 256 = 4*ngf at ngf = 64; we keep these ratios of the block width C
  (C/4 | 3C/8 -> C/2 | C/16 -> C/8 | C/8), so the concatenation is C wide and needs no projection.
- From Szegedy et al. 2016 ("Rethinking the Inception architecture", Fig. 5): the 5x5 conv factorised
  into two 3x3 convs (both C/8 wide), and average pooling in the pool branch (torchvision's
  InceptionA); `pool="max"` gives GoogLeNet's max pooling instead.
- From Szegedy et al. 2017 (Inception-ResNet) and the CycleGAN ResnetBlock: the residual branch ends
  without an activation, so what is added to the shortcut is signed. Here every branch ends in
  conv-norm, with norm-ReLU after every inner conv, as ResnetBlock's conv-norm-ReLU-conv-norm.
- From CycleGAN: instance norm without affine parameters, reflection padding before every 3x3 conv
  (and before the 3x3 pooling), conv biases as `conv_bias` decides, N(0, 0.02) initialisation.
- Our choice: one module per residual block it replaces, `n_blocks` = 9 at 256 px (6 at 128 px), as
  for `resnet`. At ngf = 64 the generator has 2,359,315 parameters (the 9-block ResNet generator:
  11,378,179); the Inception branches are narrow by design, so this variant is far smaller.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from i2ibench.nets.norms import conv_bias, norm_layer
from i2ibench.nets.resnet import EncoderTransformerDecoder, build_generator
from i2ibench.registry import register_generator

POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


def _conv_norm(in_channels: int, out_channels: int, kernel: int, norm: str, relu: bool) -> list[nn.Module]:
    """A (reflection-padded) conv then norm, and ReLU unless it ends a branch."""
    layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2)] if kernel > 1 else []
    layers += [nn.Conv2d(in_channels, out_channels, kernel, bias=conv_bias(norm)), norm_layer(norm)(out_channels)]
    return layers + [nn.ReLU(True)] if relu else layers


class InceptionResidualBlock(nn.Module):
    """x + concat(1x1, 1x1->3x3, 1x1->3x3->3x3, pool->1x1); the branch widths sum to `channels`."""

    def __init__(self, channels: int, norm: str = "instance", pool: str = "avg") -> None:
        super().__init__()
        if channels % 16:
            raise ValueError(f"inception block width must be a multiple of 16 (branches C/4, C/2, C/8, C/8 "
                             f"with a C/16 reduction), got {channels}; use ngf divisible by 4")
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; use avg or max")
        c = channels
        self.branches = nn.ModuleList([
            nn.Sequential(*_conv_norm(c, c // 4, 1, norm, relu=False)),
            nn.Sequential(*_conv_norm(c, 3 * c // 8, 1, norm, relu=True),
                          *_conv_norm(3 * c // 8, c // 2, 3, norm, relu=False)),
            nn.Sequential(*_conv_norm(c, c // 16, 1, norm, relu=True),
                          *_conv_norm(c // 16, c // 8, 3, norm, relu=True),
                          *_conv_norm(c // 8, c // 8, 3, norm, relu=False)),
            nn.Sequential(nn.ReflectionPad2d(1), POOLS[pool](3, stride=1),
                          *_conv_norm(c, c // 8, 1, norm, relu=False)),
        ])

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.cat([branch(x) for branch in self.branches], dim=1)


@register_generator("inception")
def inception_generator(in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                        norm: str = "instance", pool: str = "avg") -> EncoderTransformerDecoder:
    """CycleGAN generator whose transformer stage is `n_blocks` residual Inception modules (Ma et al. 2020).

    See the module docstring for which defaults are ours.
    """
    if n_blocks < 1:
        raise ValueError(f"inception generator needs n_blocks >= 1, got {n_blocks}")
    return build_generator(
        lambda c: nn.Sequential(*(InceptionResidualBlock(c, norm, pool) for _ in range(n_blocks))),
        in_channels, out_channels, ngf, norm,
    )
