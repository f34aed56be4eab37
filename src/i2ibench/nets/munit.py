"""The networks of MUNIT (Huang, Liu, Belongie, Kautz, "Multimodal Unsupervised Image-to-Image
Translation", ECCV 2018).

Facts from the reference, NVlabs/MUNIT networks.py, at configs/edges2handbags_folder.yaml (the
default config of its train.py):

- `ContentEncoder`: 7x7 conv (dim), `n_downsample` 4x4 stride-2 convs doubling the width, then
  `n_res` residual blocks (two 3x3 convs); instance norm (no affine parameters) after every conv.
- `StyleEncoder`: 7x7 conv (dim), two 4x4 stride-2 convs doubling the width, two more at that width
  (4 downsamplings in all), global average pooling, a 1x1 conv to `style_dim`; no normalisation.
- `Decoder`: `n_res` residual blocks whose norms are AdaIN, then `n_downsample` x (nearest 2x
  upsampling, 5x5 conv halving the width, layer norm), then a 7x7 conv to RGB and tanh.
- `StyleMLP`: style code -> `mlp_dim` -> `mlp_dim` -> every AdaIN layer's (mean, std), 3 linear layers.
- `MultiScaleDiscriminator` (MsImageDis): `num_scales` copies of 4x4 stride-2 convs (`n_layer`,
  doubling from `dim`, LeakyReLU 0.2, no norm) and a 1x1 conv to one channel, each copy seeing the
  image average-pooled once more (3x3, stride 2, padding 1 not counted).
- Every conv and linear layer has a bias; padding is `pad_type` (reflect) before each conv.
- `init_munit`: the reference's weights_init: kaiming (fan_in, a=0) normal conv / linear weights and
  zero biases for the auto-encoders; the discriminators always get N(0, 0.02) ('gaussian').
  Layer-norm scales start U[0, 1), shifts 0 (the reference's LayerNorm).

One difference of form, not of maths: the reference stores the MLP's output in the AdaIN layers'
attributes before each decode; here the decoder takes it as an argument (no hidden state, safe
under torch.compile and DDP). The AdaIN parameter layout is the reference's: per AdaIN layer in
order, `num_features` means (the shift), then `num_features` standard deviations (the scale).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True), "lrelu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "prelu": lambda: nn.PReLU(), "selu": lambda: nn.SELU(inplace=True), "tanh": lambda: nn.Tanh(),
    "none": lambda: nn.Identity(),
}
PADDINGS: dict[str, Callable[[int], nn.Module]] = {
    "reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d, "zero": nn.ZeroPad2d,
}
DISCRIMINATOR_NORMS = ("none", "in", "ln")
INITS = ("kaiming", "gaussian", "xavier", "orthogonal", "default")


class LayerNorm2d(nn.Module):
    """MUNIT's layer norm: per sample over (C, H, W) with the unbiased standard deviation,
    (x - mean) / (std + eps), then a per-channel scale (initialised U[0, 1)) and shift."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.empty(channels).uniform_())
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (std + self.eps)
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def norm_2d(name: str, channels: int) -> nn.Module:
    if name == "in":
        return nn.InstanceNorm2d(channels)  # affine=False, no running statistics: the reference's 'in'
    if name == "ln":
        return LayerNorm2d(channels)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {name!r}; use one of in, ln, none")


def conv_block(cin: int, cout: int, kernel: int, stride: int, padding: int, norm: str = "none",
               activation: str = "relu", pad_type: str = "reflect") -> nn.Sequential:
    """Pad, conv (with bias), norm, activation: the reference's Conv2dBlock."""
    if pad_type not in PADDINGS:
        raise ValueError(f"unknown pad_type {pad_type!r}; use one of {', '.join(PADDINGS)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}")
    return nn.Sequential(PADDINGS[pad_type](padding), nn.Conv2d(cin, cout, kernel, stride),
                         norm_2d(norm, cout), ACTIVATIONS[activation]())


class ResidualBlock(nn.Module):
    """x + (3x3 conv, norm, activation, 3x3 conv, norm)(x), instance-normalised (the content encoder's)."""

    def __init__(self, dim: int, activation: str = "relu", pad_type: str = "reflect") -> None:
        super().__init__()
        self.body = nn.Sequential(conv_block(dim, dim, 3, 1, 1, "in", activation, pad_type),
                                  conv_block(dim, dim, 3, 1, 1, "in", "none", pad_type))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def adain(x: Tensor, mean: Tensor, std: Tensor, eps: float = 1e-5) -> Tensor:
    """Instance-normalise x (biased variance), then scale by `std` and shift by `mean` (N x C each)."""
    return F.instance_norm(x, eps=eps) * std[:, :, None, None] + mean[:, :, None, None]


class AdaINResidualBlock(nn.Module):
    """The residual block of the decoder: its two norms are AdaIN with parameters from the style MLP."""

    def __init__(self, dim: int, activation: str = "relu", pad_type: str = "reflect") -> None:
        super().__init__()
        self.dim = dim
        self.pad1, self.conv1 = PADDINGS[pad_type](1), nn.Conv2d(dim, dim, 3)
        self.activation = ACTIVATIONS[activation]()
        self.pad2, self.conv2 = PADDINGS[pad_type](1), nn.Conv2d(dim, dim, 3)

    @property
    def num_adain_params(self) -> int:
        return 4 * self.dim  # two AdaIN layers, a mean and a std per channel each

    def forward(self, x: Tensor, params: Tensor) -> Tensor:
        mean1, std1, mean2, std2 = params.split(self.dim, dim=1)
        out = self.activation(adain(self.conv1(self.pad1(x)), mean1, std1))
        out = adain(self.conv2(self.pad2(out)), mean2, std2)
        return x + out


class ContentEncoder(nn.Module):
    def __init__(self, n_downsample: int = 2, n_res: int = 4, in_channels: int = 3, dim: int = 64,
                 activation: str = "relu", pad_type: str = "reflect") -> None:
        super().__init__()
        layers = [conv_block(in_channels, dim, 7, 1, 3, "in", activation, pad_type)]
        for _ in range(n_downsample):
            layers.append(conv_block(dim, 2 * dim, 4, 2, 1, "in", activation, pad_type))
            dim *= 2
        layers += [ResidualBlock(dim, activation, pad_type) for _ in range(n_res)]
        self.model = nn.Sequential(*layers)
        self.out_channels = dim

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class StyleEncoder(nn.Module):
    """Image -> style code (N x style_dim)."""

    def __init__(self, n_downsample: int = 4, in_channels: int = 3, dim: int = 64, style_dim: int = 8,
                 activation: str = "relu", pad_type: str = "reflect") -> None:
        super().__init__()
        layers = [conv_block(in_channels, dim, 7, 1, 3, "none", activation, pad_type)]
        for _ in range(2):  # the first two downsamplings double the width ...
            layers.append(conv_block(dim, 2 * dim, 4, 2, 1, "none", activation, pad_type))
            dim *= 2
        for _ in range(n_downsample - 2):  # ... the others keep it
            layers.append(conv_block(dim, dim, 4, 2, 1, "none", activation, pad_type))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, style_dim, 1)]
        self.model = nn.Sequential(*layers)
        self.n_downsample = n_downsample

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).flatten(1)


class Decoder(nn.Module):
    """Content code + AdaIN parameters -> image in [-1, 1]."""

    def __init__(self, n_upsample: int = 2, n_res: int = 4, dim: int = 256, out_channels: int = 3,
                 activation: str = "relu", pad_type: str = "reflect") -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(AdaINResidualBlock(dim, activation, pad_type) for _ in range(n_res))
        layers: list[nn.Module] = []
        for _ in range(n_upsample):
            layers += [nn.Upsample(scale_factor=2), conv_block(dim, dim // 2, 5, 1, 2, "ln", activation, pad_type)]
            dim //= 2
        layers.append(conv_block(dim, out_channels, 7, 1, 3, "none", "tanh", pad_type))
        self.upsample = nn.Sequential(*layers)

    @property
    def num_adain_params(self) -> int:
        return sum(block.num_adain_params for block in self.res_blocks)

    def forward(self, content: Tensor, adain_params: Tensor) -> Tensor:
        x = content
        for block, params in zip(self.res_blocks, adain_params.split(
                [b.num_adain_params for b in self.res_blocks], dim=1)):
            x = block(x, params)
        return self.upsample(x)


class StyleMLP(nn.Module):
    """Style code -> AdaIN parameters: `n_blocks` linear layers, activations between them, none after."""

    def __init__(self, style_dim: int, out_features: int, dim: int = 256, n_blocks: int = 3,
                 activation: str = "relu") -> None:
        super().__init__()
        widths = [style_dim] + [dim] * (n_blocks - 1)
        layers: list[nn.Module] = []
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.Linear(cin, cout), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(widths[-1], out_features))
        self.model = nn.Sequential(*layers)

    def forward(self, style: Tensor) -> Tensor:
        return self.model(style.flatten(1))


class AdaINAutoEncoder(nn.Module):
    """One domain's MUNIT generator (the reference's AdaINGen): style and content encoders, the
    AdaIN decoder and the MLP that maps a style code to the decoder's AdaIN parameters."""

    def __init__(self, in_channels: int = 3, dim: int = 64, style_dim: int = 8, n_downsample: int = 2,
                 n_res: int = 4, mlp_dim: int = 256, activ: str = "relu", pad_type: str = "reflect") -> None:
        super().__init__()
        self.style_dim = style_dim
        self.n_downsample = n_downsample
        self.enc_style = StyleEncoder(4, in_channels, dim, style_dim, activ, pad_type)
        self.enc_content = ContentEncoder(n_downsample, n_res, in_channels, dim, activ, pad_type)
        self.dec = Decoder(n_downsample, n_res, self.enc_content.out_channels, in_channels, activ, pad_type)
        self.mlp = StyleMLP(style_dim, self.dec.num_adain_params, mlp_dim, 3, activ)

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(content code N x C x H/4 x W/4, style code N x style_dim)."""
        return self.enc_content(images), self.enc_style(images)

    def decode(self, content: Tensor, style: Tensor) -> Tensor:
        return self.dec(content, self.mlp(style))

    def forward(self, images: Tensor) -> Tensor:
        """Within-domain reconstruction (the reference's AdaINGen.forward)."""
        content, style = self.encode(images)
        return self.decode(content, style)


class MultiScaleDiscriminator(nn.Module):
    """The reference's MsImageDis: one patch critic per scale; returns their logit maps, finest first."""

    def __init__(self, in_channels: int = 3, dim: int = 64, n_layer: int = 4, num_scales: int = 3,
                 norm: str = "none", activ: str = "lrelu", pad_type: str = "reflect") -> None:
        super().__init__()
        if norm not in DISCRIMINATOR_NORMS:
            raise ValueError(f"unknown discriminator norm {norm!r}; use one of {', '.join(DISCRIMINATOR_NORMS)}")
        self.n_layer, self.num_scales = n_layer, num_scales
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.scales = nn.ModuleList(self._critic(in_channels, dim, n_layer, norm, activ, pad_type)
                                    for _ in range(num_scales))

    @staticmethod
    def _critic(in_channels: int, dim: int, n_layer: int, norm: str, activ: str, pad_type: str) -> nn.Sequential:
        layers = [conv_block(in_channels, dim, 4, 2, 1, "none", activ, pad_type)]  # never normalised
        for _ in range(n_layer - 1):
            layers.append(conv_block(dim, 2 * dim, 4, 2, 1, norm, activ, pad_type))
            dim *= 2
        layers.append(nn.Conv2d(dim, 1, 1))
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for critic in self.scales:
            outputs.append(critic(x))
            x = self.downsample(x)
        return outputs

    def min_image_size(self) -> int:
        """The smallest image side every scale can take: a reflect pad of 1 needs 2 px at each conv."""
        side = 2**self.n_layer  # the coarsest scale's input
        for _ in range(self.num_scales - 1):
            side = 2 * side - 1  # ceil(s / 2) after each 3x3 stride-2 pool: s = 2 * side - 1 suffices
        return side


def init_munit(module: nn.Module, init_type: str = "kaiming") -> nn.Module:
    """The reference's weights_init(init_type) on every conv and linear layer: the weight as named
    ('default' keeps PyTorch's), the bias 0 in every case."""
    if init_type not in INITS:
        raise ValueError(f"unknown init {init_type!r}; use one of {', '.join(INITS)}")

    def init(m: nn.Module) -> None:
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            return
        if init_type == "gaussian":
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif init_type == "xavier":
            nn.init.xavier_normal_(m.weight, gain=2**0.5)
        elif init_type == "kaiming":
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
        elif init_type == "orthogonal":
            nn.init.orthogonal_(m.weight, gain=2**0.5)
        if m.bias is not None:
            nn.init.zeros_(m.bias)

    module.apply(init)
    return module
