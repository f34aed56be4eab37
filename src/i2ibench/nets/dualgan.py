"""DualGAN's networks (Yi, Zhang, Tan, Gong, ICCV 2017), as the reference defines them.

Reference: duxingren14/DualGAN at commit bd64bf97 (2020), `model.py` (`fcn`, `discriminator`)
and `ops.py` (`conv2d`, `deconv2d`, `batch_norm`). They differ from Pix2Pix's U-Net
(`nets/unet.py`: 4x4 kernels, batch norm, bias-free convs before a norm, no norm on the 1x1 code)
and from the 70x70 PatchGAN, hence this file:

- Generator: a U-Net of `num_downs` stride-2 levels (8 at 256 px: 256 -> 1x1). 5x5 kernels on
  the outermost conv and transposed conv, 3x3 everywhere else; every conv has a bias; widths
  ngf, 2ngf, 4ngf, 8ngf, 8ngf...; LeakyReLU 0.2 before each down conv, ReLU before each up conv,
  tanh out; a norm after every conv but the first and the last, the 1x1 code included (there it
  outputs its learnt shift alone: the reference's norm takes moments over the spatial axes, and
  a 1x1 map has no spread). Dropout is off by default (`--dropout_rate 0`).
- Critic: conv 5x5 (ndf) + LeakyReLU, then four 3x3 stride-2 convs (2ndf, 4ndf, 8ndf, 8ndf), each
  normed + LeakyReLU, then a head: `global` (the reference's default `--disc_type globalgan`: a
  linear layer on the flattened 8ndf x s/32 x s/32 map, so it is built for one image size) or
  `patch` (a 3x3 stride-2 conv to one channel). No sigmoid: it is a Wasserstein critic. Images
  must be at least 64 px: at 32 the last normed map is 1x1 and the critic would be a constant.
- The reference's `batch_norm` normalises each sample's channels over H x W (an instance norm)
  with eps 1e-6 and a learnt scale (init N(1, 0.02)) and shift (init 0): `MomentNorm`.
- Init as the reference: conv weights truncated N(0, 0.02) (cut at 2 std), transposed-conv and
  linear weights N(0, 0.02), biases 0.

Not reproduced: TensorFlow's 'SAME' padding pads stride-2 convs asymmetrically (more at the
bottom/right); ours pads symmetrically. Shapes and parameter counts are the reference's; there is
no reference-parity fixture for DualGAN, so pixel alignment is not claimed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from i2ibench.registry import register_discriminator, register_generator

INIT_STD = 0.02  # ops.py: stddev=0.02 for conv2d, deconv2d and linear


class MomentNorm(nn.Module):
    """Per-sample, per-channel normalisation over H x W with a learnt scale and shift (ops.py `batch_norm`).

    Unlike nn.InstanceNorm2d it accepts a 1x1 map (the U-Net's innermost code), where it returns the shift.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(channels).normal_(1.0, INIT_STD))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _down(in_channels: int, out_channels: int, kernel: int) -> nn.Conv2d:
    """A stride-2 conv that halves even sides (TensorFlow 'SAME' output size)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride=2, padding=kernel // 2)
    nn.init.trunc_normal_(conv.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
    nn.init.zeros_(conv.bias)
    return conv


def _up(in_channels: int, out_channels: int, kernel: int) -> nn.ConvTranspose2d:
    """A stride-2 transposed conv that doubles the sides."""
    conv = nn.ConvTranspose2d(in_channels, out_channels, kernel, stride=2, padding=kernel // 2, output_padding=1)
    nn.init.normal_(conv.weight, std=INIT_STD)
    nn.init.zeros_(conv.bias)
    return conv


class DualGANGenerator(nn.Module):
    """The reference's `fcn`: a U-Net with skip connections by concatenation.

    Args:
        in_channels, out_channels: image channels (3).
        ngf: channels of the first conv (`--gcn 64`).
        num_downs: stride-2 levels; 2**num_downs pixels become 1x1 (8 at 256 px, 7 at 128, 6 at 64).
        dropout: drop probability after the norm of the first three up levels (`--dropout_rate 0`:
            off; the reference passes this number as TensorFlow's keep probability when it is > 0).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, num_downs: int = 8,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"DualGANGenerator needs num_downs >= 5 (widths ngf..8ngf), got {num_downs}")
        self.num_downs = num_downs
        widths = [ngf * min(2**i, 8) for i in range(num_downs)]  # encoder outputs e1..e_n
        self.encoder = nn.ModuleList([_down(in_channels, widths[0], 5)])
        self.encoder_norms = nn.ModuleList([nn.Identity()])
        for i in range(1, num_downs):
            self.encoder.append(_down(widths[i - 1], widths[i], 3))
            self.encoder_norms.append(MomentNorm(widths[i]))
        self.decoder, self.decoder_norms = nn.ModuleList(), nn.ModuleList()
        in_width = widths[-1]
        for i in range(num_downs - 1):  # up level i mirrors encoder output num_downs - 2 - i
            width = widths[num_downs - 2 - i]
            self.decoder.append(_up(in_width, width, 3))
            self.decoder_norms.append(MomentNorm(width))
            in_width = width * 2  # concatenated with the mirrored encoder output
        self.outermost = _up(in_width, out_channels, 5)
        self.dropouts = nn.ModuleList([nn.Dropout(dropout) if dropout > 0 and i < 3 else nn.Identity()
                                       for i in range(num_downs - 1)])

    @property
    def size_multiple(self) -> int:
        return 2**self.num_downs

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for i, (conv, norm) in enumerate(zip(self.encoder, self.encoder_norms)):
            x = norm(conv(x if i == 0 else nn.functional.leaky_relu(x, 0.2)))
            skips.append(x)
        for i, (conv, norm, drop) in enumerate(zip(self.decoder, self.decoder_norms, self.dropouts)):
            x = torch.cat([drop(norm(conv(torch.relu(x)))), skips[-2 - i]], dim=1)
        return torch.tanh(self.outermost(torch.relu(x)))


class DualGANCritic(nn.Module):
    """The reference's `discriminator`: five stride-2 convs and a `global` (linear) or `patch` head.

    Args:
        in_channels: image channels (3).
        ndf: channels of the first conv (`--dcn 64`).
        head: `global` (`--disc_type globalgan`, the reference's default) or `patch`.
        image_size: side of the square images it judges; the global head's linear layer depends
            on it (8ndf x (s/32)^2 inputs). Unused by the patch head.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, head: str = "global", image_size: int = 256) -> None:
        super().__init__()
        if head not in ("global", "patch"):
            raise ValueError(f"DualGANCritic head must be global or patch, got {head!r}")
        if image_size % 32 or image_size < 64:
            # At 32 px the last normed map is 1x1, where the norm outputs its shift alone: a constant critic.
            raise ValueError(f"DualGANCritic needs an image_size that is a multiple of 32 and at least 64 "
                             f"(5 stride-2 convs, then a norm over the remaining map), got {image_size}")
        self.head_kind, self.image_size = head, image_size
        widths = [ndf, ndf * 2, ndf * 4, ndf * 8, ndf * 8]
        layers: list[nn.Module] = [_down(in_channels, ndf, 5), nn.LeakyReLU(0.2)]
        for prev, width in zip(widths, widths[1:]):
            layers += [_down(prev, width, 3), MomentNorm(width), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        if head == "global":
            self.head = nn.Linear(widths[-1] * (image_size // 32) ** 2, 1)
            nn.init.normal_(self.head.weight, std=INIT_STD)
            nn.init.zeros_(self.head.bias)
        else:
            self.head = _down(widths[-1], 1, 3)

    def forward(self, x: Tensor) -> Tensor:
        if self.head_kind == "global" and x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"this DualGAN critic was built for {self.image_size} px images (its linear head), "
                             f"got {tuple(x.shape[-2:])}: set discriminator_args.image_size to the crop size")
        h = self.features(x)
        return self.head(h.flatten(1)) if self.head_kind == "global" else self.head(h)


register_generator("dualgan-unet")(DualGANGenerator)
register_discriminator("dualgan-critic")(DualGANCritic)
