"""The CycleGAN ResNet generator (Johnson et al. 2016 as adapted by Zhu et al. 2017).

Faithful to junyanz/pytorch-CycleGAN-and-pix2pix `ResnetGenerator`: reflection padding, 7x7 stem,
two stride-2 downsamples, `n_blocks` residual blocks, two transposed-conv upsamples, 7x7 conv, tanh.
The transformer stage is a parameter, so the DenseNet and Inception variants reuse the encoder
and decoder unchanged.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from i2ibench.nets.init import init_normal
from i2ibench.nets.norms import conv_bias, norm_layer
from i2ibench.registry import register_generator


class ResnetBlock(nn.Module):
    """conv-norm-ReLU-conv-norm with an identity shortcut; no ReLU after the add (as the reference)."""

    def __init__(self, channels: int, norm: str = "instance", dropout: bool = False) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), make_norm(channels), nn.ReLU(True),
        ]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), make_norm(channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def resnet_encoder(in_channels: int, ngf: int, norm: str) -> nn.Sequential:
    """7x7 stem then two stride-2 3x3 convs: H x W -> H/4 x W/4 with 4*ngf channels."""
    make_norm, bias = norm_layer(norm), conv_bias(norm)
    layers: list[nn.Module] = [
        nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias), make_norm(ngf), nn.ReLU(True),
    ]
    for mult in (1, 2):
        layers += [
            nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
            make_norm(ngf * mult * 2), nn.ReLU(True),
        ]
    return nn.Sequential(*layers)


def resnet_decoder(out_channels: int, ngf: int, norm: str, in_mult: int = 4) -> nn.Sequential:
    """Two transposed convs back to full size, then a 7x7 conv and tanh (outputs in [-1, 1])."""
    make_norm, bias = norm_layer(norm), conv_bias(norm)
    layers: list[nn.Module] = []
    for mult in (in_mult, in_mult // 2):
        layers += [
            nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
            make_norm(ngf * mult // 2), nn.ReLU(True),
        ]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
    return nn.Sequential(*layers)


class EncoderTransformerDecoder(nn.Module):
    """The CycleGAN generator layout; `transformer` maps (4*ngf channels) -> (4*ngf channels)."""

    def __init__(self, encoder: nn.Module, transformer: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.transformer, self.decoder = encoder, transformer, decoder
        init_normal(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.transformer(self.encoder(x)))


def build_generator(transformer: Callable[[int], nn.Module], in_channels: int, out_channels: int,
                    ngf: int, norm: str) -> EncoderTransformerDecoder:
    return EncoderTransformerDecoder(
        resnet_encoder(in_channels, ngf, norm), transformer(4 * ngf), resnet_decoder(out_channels, ngf, norm)
    )


@register_generator("resnet")
def resnet_generator(in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                     norm: str = "instance", dropout: bool = False) -> EncoderTransformerDecoder:
    """ResNet generator: 9 blocks at 256 px, 6 at 128 px (Zhu et al. 2017, appendix 7.2)."""
    return build_generator(
        lambda c: nn.Sequential(*(ResnetBlock(c, norm, dropout) for _ in range(n_blocks))),
        in_channels, out_channels, ngf, norm,
    )
