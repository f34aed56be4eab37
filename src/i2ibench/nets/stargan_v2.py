"""StarGAN v2 networks (Choi et al., CVPR 2020): generator, mapping network, style encoder, discriminator.

Faithful to clovaai/stargan-v2 `core/model.py` (architecture) and `core/utils.py` (`he_init`). Attribute
names follow the reference (`from_rgb`, `encode`, `decode`, `to_rgb`, `shared`, `unshared`, `main`,
`conv1`, `norm1.fc`, `conv1x1`, ...) so that its published checkpoints load with `load_state_dict`.

Differences from the reference, each deliberate:
- `Generator` defaults to `w_hpf=0`. With `w_hpf > 0` the reference adds high-pass skips guided by face
  masks from a pretrained FAN landmark network (`core/wing.py`), which i2ibench does not ship; the
  structure is still built (so parameters can be counted), and `forward` without masks raises.
- `base_dim` (default: the reference's `2**14 // img_size`) lets tests and CPU smoke runs use tiny widths.
- The high-pass kernel is a non-persistent buffer, so it follows `.to(device)` and stays out of checkpoints
  (the reference fixes its device at construction).
- `img_size` must be a power of two >= 16; the reference floors log2 and would silently mis-index the
  discriminator's outputs otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NEGATIVE_SLOPE = 0.2  # LeakyReLU slope everywhere in the reference
MASKED_SKIP_SIZES = (32, 64, 128)  # feature sizes that get a masked high-pass skip when w_hpf > 0


def he_init(module: nn.Module) -> nn.Module:
    """Kaiming-normal (fan_in, ReLU gain) weights and zero biases for every conv and linear layer.

    The reference's `he_init` (core/utils.py), which its solver applies to each trained network.
    Norm layers keep PyTorch's default (weight 1, bias 0). Returns `module` for chaining.
    """

    def init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    module.apply(init)
    return module


def _log2(img_size: int) -> int:
    if img_size < 16 or img_size & (img_size - 1):
        raise ValueError(f"StarGAN v2 needs img_size a power of two >= 16, got {img_size}")
    return img_size.bit_length() - 1


def _base_dim(img_size: int, base_dim: int | None) -> int:
    """Channels after the first conv: the reference ties them to the image size (64 at 256 px)."""
    return 2**14 // img_size if base_dim is None else base_dim


def select_domain(outputs: Tensor, y: Tensor) -> Tensor:
    """Row i of `outputs` (B x num_domains x ...) at domain y[i]: each sample reads its own domain's head."""
    return outputs[torch.arange(outputs.size(0), device=outputs.device), y]


class ResBlk(nn.Module):
    """Pre-activation residual block: [IN] -> LReLU -> conv3x3 -> [avgpool] -> [IN] -> LReLU -> conv3x3.

    The shortcut is a bias-free 1x1 conv when the width changes (then avg-pooled when downsampling);
    the sum is divided by sqrt(2) to keep unit variance. Instance norms are affine.
    """

    def __init__(self, dim_in: int, dim_out: int, normalize: bool = False, downsample: bool = False) -> None:
        super().__init__()
        self.normalize, self.downsample = normalize, downsample
        self.actv = nn.LeakyReLU(NEGATIVE_SLOPE)
        self.conv1 = nn.Conv2d(dim_in, dim_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(dim_in, affine=True)
        self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False) if dim_in != dim_out else None

    def shortcut(self, x: Tensor) -> Tensor:
        if self.conv1x1 is not None:
            x = self.conv1x1(x)
        return F.avg_pool2d(x, 2) if self.downsample else x

    def residual(self, x: Tensor) -> Tensor:
        if self.normalize:
            x = self.norm1(x)
        x = self.conv1(self.actv(x))
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        if self.normalize:
            x = self.norm2(x)
        return self.conv2(self.actv(x))

    def forward(self, x: Tensor) -> Tensor:
        return (self.shortcut(x) + self.residual(x)) / math.sqrt(2)


class AdaIN(nn.Module):
    """Adaptive instance norm: (1 + gamma(s)) * IN(x) + beta(s), gamma and beta from one Linear on the style."""

    def __init__(self, style_dim: int, num_features: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(num_features, affine=False)
        self.fc = nn.Linear(style_dim, 2 * num_features)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        gamma, beta = self.fc(s)[:, :, None, None].chunk(2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlk(nn.Module):
    """Decoder block: AdaIN -> LReLU -> [2x nearest upsample] -> conv3x3 -> AdaIN -> LReLU -> conv3x3.

    With `w_hpf == 0` a (1x1 when the width changes) shortcut is added and the sum divided by sqrt(2).
    With `w_hpf > 0` the reference drops the shortcut: the masked high-pass skips carry the detail instead.
    The 1x1 conv is still built then (it is in the reference's parameter count), just unused.
    """

    def __init__(self, dim_in: int, dim_out: int, style_dim: int = 64, w_hpf: float = 0,
                 upsample: bool = False) -> None:
        super().__init__()
        self.w_hpf, self.upsample = w_hpf, upsample
        self.actv = nn.LeakyReLU(NEGATIVE_SLOPE)
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, 1, 1)
        self.norm1 = AdaIN(style_dim, dim_in)
        self.norm2 = AdaIN(style_dim, dim_out)
        self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False) if dim_in != dim_out else None

    def shortcut(self, x: Tensor) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv1x1(x) if self.conv1x1 is not None else x

    def residual(self, x: Tensor, s: Tensor) -> Tensor:
        x = self.actv(self.norm1(x, s))
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv1(x)
        return self.conv2(self.actv(self.norm2(x, s)))

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        out = self.residual(x, s)
        if self.w_hpf == 0:
            out = (out + self.shortcut(x)) / math.sqrt(2)
        return out


class HighPass(nn.Module):
    """Per-channel 3x3 Laplacian-like high-pass filter (centre 8, others -1), scaled by 1 / w_hpf."""

    def __init__(self, w_hpf: float) -> None:
        super().__init__()
        kernel = torch.full((3, 3), -1.0)
        kernel[1, 1] = 8.0
        self.register_buffer("kernel", kernel / w_hpf, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        channels = x.size(1)
        weight = self.kernel.to(x.dtype).expand(channels, 1, 3, 3)
        return F.conv2d(x, weight, padding=1, groups=channels)


class Generator(nn.Module):
    """Encoder of ResBlks (instance-normalised, downsampling) and a style-modulated AdainResBlk decoder.

    `log2(img_size) - 4` down/up blocks (one more when `w_hpf > 0`), widths doubling up to `max_conv_dim`,
    then 2 bottleneck blocks on each side. The output is IN -> LReLU -> 1x1 conv to RGB, with no tanh
    (as the reference). forward(x, s) takes images B x 3 x H x W and styles B x style_dim.
    """

    def __init__(self, img_size: int = 256, style_dim: int = 64, max_conv_dim: int = 512, w_hpf: float = 0,
                 base_dim: int | None = None) -> None:
        super().__init__()
        self.img_size, self.w_hpf = img_size, w_hpf
        dim_in = _base_dim(img_size, base_dim)
        self.from_rgb = nn.Conv2d(3, dim_in, 3, 1, 1)
        self.encode = nn.ModuleList()
        self.decode = nn.ModuleList()
        self.to_rgb = nn.Sequential(
            nn.InstanceNorm2d(dim_in, affine=True), nn.LeakyReLU(NEGATIVE_SLOPE), nn.Conv2d(dim_in, 3, 1, 1, 0)
        )
        dim_out = dim_in
        for _ in range(_log2(img_size) - 4 + (1 if w_hpf > 0 else 0)):
            dim_out = min(dim_in * 2, max_conv_dim)
            self.encode.append(ResBlk(dim_in, dim_out, normalize=True, downsample=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_in, style_dim, w_hpf=w_hpf, upsample=True))
            dim_in = dim_out
        for _ in range(2):  # bottleneck
            self.encode.append(ResBlk(dim_out, dim_out, normalize=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_out, style_dim, w_hpf=w_hpf))
        self.hpf = HighPass(w_hpf) if w_hpf > 0 else None

    def forward(self, x: Tensor, s: Tensor, masks: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """`masks` (two B x 1 x h x w face heatmaps, the reference's FAN output) only when `w_hpf > 0`."""
        if self.hpf is None and masks is not None:
            raise ValueError("Generator(w_hpf=0) takes no masks; masks feed the w_hpf > 0 high-pass skips")
        if self.hpf is not None and masks is None:
            raise RuntimeError(
                f"Generator(w_hpf={self.w_hpf}) needs face masks from a pretrained FAN landmark network "
                "(clovaai/stargan-v2 core/wing.py), which is unavailable in i2ibench; build it with w_hpf=0, "
                "or pass masks=(mask_32, mask_64_128) yourself"
            )
        x = self.from_rgb(x)
        cache: dict[int, Tensor] = {}
        for block in self.encode:
            if masks is not None and x.size(2) in MASKED_SKIP_SIZES:
                cache[x.size(2)] = x
            x = block(x)
        for block in self.decode:
            x = block(x, s)
            if masks is not None and self.hpf is not None and x.size(2) in MASKED_SKIP_SIZES:
                mask = masks[0] if x.size(2) == 32 else masks[1]
                mask = F.interpolate(mask, size=x.size(2), mode="bilinear")
                x = x + self.hpf(mask * cache[x.size(2)])
        return self.to_rgb(x)


class MappingNetwork(nn.Module):
    """Latent code z -> style code of domain y: a shared 4-layer MLP, then one 4-layer MLP head per domain."""

    def __init__(self, latent_dim: int = 16, style_dim: int = 64, num_domains: int = 2,
                 hidden_dim: int = 512) -> None:
        super().__init__()
        shared: list[nn.Module] = [nn.Linear(latent_dim, hidden_dim), nn.ReLU()]
        for _ in range(3):
            shared += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        self.shared = nn.Sequential(*shared)
        self.unshared = nn.ModuleList(
            nn.Sequential(
                nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                nn.Linear(hidden_dim, style_dim),
            )
            for _ in range(num_domains)
        )

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        h = self.shared(z)
        return select_domain(torch.stack([head(h) for head in self.unshared], dim=1), y)


def downsampling_trunk(img_size: int, max_conv_dim: int,
                       base_dim: int | None = None) -> tuple[list[nn.Module], int]:
    """The trunk the style encoder and discriminator share, and its output width.

    conv3x3 -> `log2(img_size) - 2` un-normalised downsampling ResBlks (to 4 x 4) -> LReLU -> 4x4 valid
    conv (to 1 x 1) -> LReLU. Returned as a layer list so each owner wraps it in its reference name.
    """
    dim_in = _base_dim(img_size, base_dim)
    layers: list[nn.Module] = [nn.Conv2d(3, dim_in, 3, 1, 1)]
    dim_out = dim_in
    for _ in range(_log2(img_size) - 2):
        dim_out = min(dim_in * 2, max_conv_dim)
        layers.append(ResBlk(dim_in, dim_out, downsample=True))
        dim_in = dim_out
    layers += [nn.LeakyReLU(NEGATIVE_SLOPE), nn.Conv2d(dim_out, dim_out, 4, 1, 0), nn.LeakyReLU(NEGATIVE_SLOPE)]
    return layers, dim_out


def _flatten_trunk_output(h: Tensor, img_size: int) -> Tensor:
    if h.shape[2:] != (1, 1):
        raise ValueError(f"expected {img_size} x {img_size} images, got a {tuple(h.shape[2:])} trunk output")
    return h.flatten(1)


class StyleEncoder(nn.Module):
    """Reference image x -> style code of domain y: the shared trunk, then one Linear head per domain."""

    def __init__(self, img_size: int = 256, style_dim: int = 64, num_domains: int = 2, max_conv_dim: int = 512,
                 base_dim: int | None = None) -> None:
        super().__init__()
        self.img_size = img_size
        layers, dim_out = downsampling_trunk(img_size, max_conv_dim, base_dim)
        self.shared = nn.Sequential(*layers)
        self.unshared = nn.ModuleList(nn.Linear(dim_out, style_dim) for _ in range(num_domains))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = _flatten_trunk_output(self.shared(x), self.img_size)
        return select_domain(torch.stack([head(h) for head in self.unshared], dim=1), y)


class Discriminator(nn.Module):
    """Multi-task discriminator: the shared trunk, then a 1x1 conv with one real/fake logit per domain.

    forward(x, y) returns B logits, each from its sample's domain y (no sigmoid).
    """

    def __init__(self, img_size: int = 256, num_domains: int = 2, max_conv_dim: int = 512,
                 base_dim: int | None = None) -> None:
        super().__init__()
        self.img_size = img_size
        layers, dim_out = downsampling_trunk(img_size, max_conv_dim, base_dim)
        self.main = nn.Sequential(*layers, nn.Conv2d(dim_out, num_domains, 1, 1, 0))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return select_domain(_flatten_trunk_output(self.main(x), self.img_size), y)


def build_stargan_v2(img_size: int, style_dim: int, latent_dim: int, num_domains: int, max_conv_dim: int = 512,
                     w_hpf: float = 0, base_dim: int | None = None) -> dict[str, nn.Module]:
    """The four trained networks, He-initialised as the reference's solver does.

    Keys: "generator", "mapping_network", "style_encoder", "discriminator". EMA copies are the method's
    business (the reference deep-copies before initialising, so its EMA nets start from PyTorch defaults).
    """
    nets: dict[str, nn.Module] = {
        "generator": Generator(img_size, style_dim, max_conv_dim, w_hpf, base_dim),
        "mapping_network": MappingNetwork(latent_dim, style_dim, num_domains),
        "style_encoder": StyleEncoder(img_size, style_dim, num_domains, max_conv_dim, base_dim),
        "discriminator": Discriminator(img_size, num_domains, max_conv_dim, base_dim),
    }
    for net in nets.values():
        he_init(net)
    return nets
