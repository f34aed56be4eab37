"""DRIT++ networks (Lee et al., "DRIT++: Diverse Image-to-Image Translation via Disentangled
Representations", IJCV 2020), as the reference HsinYingLee/DRIT (master, src/networks.py) builds
them for its default `--concat 1` (attributes concatenated to the decoder's features).

- `ContentEncoder`: per domain a 7x7 conv, two stride-2 convs and 3 residual blocks; the last
  residual block (and the Gaussian noise added to the code while training) is shared by both
  domains, so both map into one content space (E_content).
- `AttributeEncoder`: per domain a VAE-like encoder (4x4 conv, 3 BasicBlocks, global average
  pool, mu and log-variance heads) of the attribute code z (E_attr_concat).
- `ConcatGenerator`: a shared residual block, then per domain 3 residual blocks and 2 transposed
  convs with layer norm, z tiled and concatenated before each stage (G_concat).
- `MultiScaleDiscriminator`: one domain's discriminator, 3 scales of 4 stride-2 convs (MultiScaleDis).
- `ContentDiscriminator`: tells the two domains' content codes apart (Dis_content).

Faithful quirks of the reference, kept on purpose: its LeakyReLUConv2d never normalises (it tests
the literal `'norm' == 'Instance'`), so neither discriminator has a norm layer whatever --dis_norm
says; that block's LeakyReLU has PyTorch's default slope 0.01 (the attribute encoder's is 0.2);
conv and transposed-conv weights start from N(0, 0.02) (gaussian_weights_init), biases and
linear layers from PyTorch's defaults.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DOMAINS = ("a", "b")


def gaussian_init_(module: nn.Module) -> None:
    """The reference's gaussian_weights_init: every Conv* weight ~ N(0, 0.02); biases untouched."""
    for m in module.modules():
        if type(m).__name__.startswith("Conv"):
            nn.init.normal_(m.weight, 0.0, 0.02)


def leaky_conv(cin: int, cout: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    """The reference's LeakyReLUConv2d: reflection pad, conv with bias, LeakyReLU(0.01), no norm."""
    return nn.Sequential(nn.ReflectionPad2d(padding), nn.Conv2d(cin, cout, kernel, stride), nn.LeakyReLU(inplace=True))


def relu_instance_conv(cin: int, cout: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    """ReLUINSConv2d: reflection pad, conv, instance norm (no affine), ReLU."""
    return nn.Sequential(nn.ReflectionPad2d(padding), nn.Conv2d(cin, cout, kernel, stride),
                         nn.InstanceNorm2d(cout), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """INSResBlock: x + IN(conv3(ReLU(IN(conv3(x))))), reflection padding, no affine norm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class GaussianNoise(nn.Module):
    """Adds N(0, 1) noise while training, nothing in eval mode (the reference's GaussianNoiseLayer)."""

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.randn_like(x) if self.training else x


class ContentEncoder(nn.Module):
    """E_content: image -> content code of 4 * dim channels at 1/4 resolution, one branch per domain
    and a shared last residual block (weight sharing ties the two content spaces together)."""

    def __init__(self, in_channels: int = 3, dim: int = 64, n_res: int = 3) -> None:
        super().__init__()

        def branch() -> nn.Sequential:
            layers = [leaky_conv(in_channels, dim, 7, 1, 3)]
            width = dim
            for _ in range(2):
                layers.append(relu_instance_conv(width, width * 2, 3, 2, 1))
                width *= 2
            layers += [ResidualBlock(width) for _ in range(n_res)]
            return nn.Sequential(*layers)

        self.branches = nn.ModuleDict({d: branch() for d in DOMAINS})
        self.channels = dim * 4
        self.shared = nn.Sequential(ResidualBlock(self.channels), GaussianNoise())
        gaussian_init_(self)

    def forward(self, x: Tensor, domain: str) -> Tensor:
        """`domain`: "a" or "b", the domain `x` comes from."""
        return self.shared(self.branches[domain](x))


class AttributeBlock(nn.Module):
    """The reference's BasicBlock without norm: LReLU, 3x3 conv, LReLU, 3x3 conv, 2x2 mean pool,
    plus a mean-pool + 1x1 conv shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.LeakyReLU(0.2), nn.ReflectionPad2d(1), nn.Conv2d(cin, cin, 3),
                                  nn.LeakyReLU(0.2), nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3), nn.AvgPool2d(2))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(cin, cout, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.shortcut(x)


class AttributeBranch(nn.Module):
    """One domain's E_attr_concat: image -> (mu, logvar) of its nz-dimensional attribute code."""

    def __init__(self, in_channels: int, nz: int, ndf: int, n_blocks: int, max_mult: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(in_channels, ndf, 4, 2)]
        width = ndf
        for n in range(1, n_blocks):
            width = ndf * min(max_mult, n + 1)
            layers.append(AttributeBlock(ndf * min(max_mult, n), width))
        layers += [nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.mu = nn.Linear(width, nz)
        self.logvar = nn.Linear(width, nz)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.mu(h), self.logvar(h)


class AttributeEncoder(nn.Module):
    """E_attr_concat: one VAE-like attribute encoder per domain (no shared weights)."""

    def __init__(self, in_channels: int = 3, nz: int = 8, ndf: int = 64, n_blocks: int = 4) -> None:
        super().__init__()
        self.nz = nz
        self.branches = nn.ModuleDict({d: AttributeBranch(in_channels, nz, ndf, n_blocks) for d in DOMAINS})
        # 2 halvings from the first conv and each BasicBlock: the smallest image it can take
        self.size_multiple = 2 ** n_blocks
        gaussian_init_(self)

    def forward(self, x: Tensor, domain: str) -> tuple[Tensor, Tensor]:
        """(mu, logvar), each N x nz, of the attribute code of `x` from `domain`."""
        return self.branches[domain](x)


class SampleLayerNorm(nn.Module):
    """The reference's LayerNorm (from MUNIT): normalise each sample over C x H x W, then a
    per-channel scale and shift."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels, 1, 1))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape[1:]
        return F.layer_norm(x, shape, self.weight.expand(shape), self.bias.expand(shape), self.eps)


def tile(z: Tensor, like: Tensor) -> Tensor:
    """z (N x nz) as an N x nz x H x W map matching `like`'s spatial size."""
    return z[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])


class ConcatDecoder(nn.Module):
    """One domain's half of G_concat: z concatenated before the residual blocks and each upsampling."""

    def __init__(self, content_channels: int, nz: int, out_channels: int, n_res: int = 3) -> None:
        super().__init__()
        width = content_channels + nz
        self.res = nn.Sequential(*[ResidualBlock(width) for _ in range(n_res)])
        self.ups = nn.ModuleList()
        for _ in range(2):
            width += nz
            self.ups.append(nn.Sequential(nn.ConvTranspose2d(width, width // 2, 3, 2, 1, output_padding=1),
                                          SampleLayerNorm(width // 2), nn.ReLU(inplace=True)))
            width //= 2
        self.out = nn.Sequential(nn.ConvTranspose2d(width + nz, out_channels, 1), nn.Tanh())

    def forward(self, shared: Tensor, z: Tensor) -> Tensor:
        h = self.res(torch.cat([shared, tile(z, shared)], 1))
        for up in self.ups:
            h = up(torch.cat([h, tile(z, h)], 1))
        return self.out(torch.cat([h, tile(z, h)], 1))


class ConcatGenerator(nn.Module):
    """G_concat: (content code, attribute z) -> image of a domain; the first residual block is
    shared by both domains' decoders."""

    def __init__(self, content_channels: int = 256, nz: int = 8, out_channels: int = 3, n_res: int = 3) -> None:
        super().__init__()
        self.nz = nz
        self.shared = ResidualBlock(content_channels)
        self.decoders = nn.ModuleDict({d: ConcatDecoder(content_channels, nz, out_channels, n_res) for d in DOMAINS})
        gaussian_init_(self)

    def forward(self, content: Tensor, z: Tensor, domain: str) -> Tensor:
        """An image of `domain` ("a" or "b") with this content and attribute code."""
        return self.decoders[domain](self.shared(content), z)


class MultiScaleDiscriminator(nn.Module):
    """MultiScaleDis: `n_scales` PatchGAN-like nets of `n_layers` 4x4 stride-2 convs (width doubling
    from `ch`) and a 1x1 head, each on the image average-pooled once more than the previous."""

    def __init__(self, in_channels: int = 3, ch: int = 64, n_layers: int = 4, n_scales: int = 3) -> None:
        super().__init__()
        self.n_layers, self.n_scales = n_layers, n_scales

        def scale() -> nn.Sequential:
            layers, width = [leaky_conv(in_channels, ch, 4, 2, 1)], ch
            for _ in range(1, n_layers):
                layers.append(leaky_conv(width, width * 2, 4, 2, 1))
                width *= 2
            return nn.Sequential(*layers, nn.Conv2d(width, 1, 1))

        self.scales = nn.ModuleList([scale() for _ in range(n_scales)])
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        gaussian_init_(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Logits per scale, finest first."""
        outputs = []
        for net in self.scales:
            outputs.append(net(x))
            x = self.downsample(x)
        return outputs

    def coarsest_output_side(self, side: int) -> int:
        """Side of the coarsest scale's logit map for a `side` px input (< 1: the input is too small)."""
        for _ in range(self.n_scales - 1):
            side = (side - 1) // 2 + 1
        for _ in range(self.n_layers):
            side //= 2
        return side


class ContentDiscriminator(nn.Module):
    """Dis_content: content code -> one logit per position, telling domain A's codes from B's.

    The reference's layout: 3 reflection-padded 7x7 stride-2 convs and a 4x4 conv, with LeakyReLU,
    then a 1x1 head; at 216 px (content 54 x 54) that is one logit per image. `n_layers` and
    `kernel_size` let smaller images through (the logits are flattened, as the reference's view(-1)).
    """

    def __init__(self, channels: int = 256, n_layers: int = 3, kernel_size: int = 7) -> None:
        super().__init__()
        self.n_layers, self.kernel_size = n_layers, kernel_size
        layers = [leaky_conv(channels, channels, kernel_size, 2, 1) for _ in range(n_layers)]
        layers += [leaky_conv(channels, channels, 4, 1, 0), nn.Conv2d(channels, 1, 1)]
        self.net = nn.Sequential(*layers)
        gaussian_init_(self)

    def forward(self, content: Tensor) -> Tensor:
        return self.net(content).flatten()

    def output_side(self, content_side: int) -> int:
        """Side of the logit map for a content code of this side (< 1: too small)."""
        side = content_side
        for _ in range(self.n_layers):
            if side < 2 or side + 2 < self.kernel_size:  # reflection padding 1 needs 2 px; the kernel must fit
                return 0
            side = (side + 2 - self.kernel_size) // 2 + 1
        return side - 3
