"""The networks of CUT / FastCUT (Park, Efros, Zhang, Zhu, ECCV 2020).

Faithful to taesungp/contrastive-unpaired-translation, models/networks.py:
- `CUTGenerator`: the CycleGAN ResNet generator with anti-aliased resampling (Zhang 2019,
  "Making convolutional networks shift-invariant again"): each stride-2 conv becomes a stride-1
  conv followed by a 3x3 binomial blur-pool, each transposed conv a fixed 4x4 binomial upsampling
  followed by a 3x3 conv. `no_antialias` / `no_antialias_up` restore the strided convs (the
  reference's flags of the same names). Its layers form one flat sequence, so that the PatchNCE
  layer ids (0, 4, 8, 12, 16) index exactly the reference's layers.
- `AntialiasedPatchDiscriminator`: the 70x70 PatchGAN with the same blur-pool downsampling.
- `PatchSampleHead`: samples the same patch positions from the source and translated features
  and projects each through a two-layer MLP to L2-normalised 256-d vectors. The reference builds
  the MLPs lazily, at the first forward pass, from the feature shapes it sees; that breaks
  DataParallel and DDP (its issues #2, #21, #33, #114: parameters created after the wrapper
  registered the model). Here they are built in `__init__` from the generator's known channel
  counts, so the module is complete before any wrapper sees it.
All three use the reference's init: xavier-normal weights with gain 0.02, zero biases.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from i2ibench.nets.norms import conv_bias, norm_layer
from i2ibench.nets.resnet import ResnetBlock
from i2ibench.registry import register_discriminator, register_generator


def init_xavier(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """Xavier-normal conv and linear weights (gain 0.02), zero biases, batch-norm weights N(1, gain).

    The reference's `--init_type xavier --init_gain 0.02` (CUT's default; CycleGAN's is `normal`).
    """

    def init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    module.apply(init)
    return module


def binomial_filter(size: int) -> Tensor:
    """size x size outer product of the binomial row (1, 2, 1), (1, 3, 3, 1), ..., summing to 1."""
    row = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float64)
    kernel = row[:, None] * row[None, :]
    return (kernel / kernel.sum()).float()


class BlurDownsample(nn.Module):
    """Reflect-pad, blur with a fixed 3x3 binomial filter, keep every second pixel (H x W -> H/2 x W/2)."""

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.pad = ((size - 1) // 2, size // 2, (size - 1) // 2, size // 2)  # left, right, top, bottom
        self.register_buffer("kernel", binomial_filter(size)[None, None], persistent=False)  # fixed, not learned

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        kernel = self.kernel.to(x.dtype).expand(channels, 1, -1, -1)
        return F.conv2d(F.pad(x, self.pad, mode="reflect"), kernel, stride=2, groups=channels)


class BlurUpsample(nn.Module):
    """Replicate-pad by 1, transposed conv with a fixed 4x4 binomial filter (x4 for the zeros), crop:
    H x W -> 2H x 2W, as the reference's `Upsample` (filter size 4, stride 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", binomial_filter(4)[None, None] * 4, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        kernel = self.kernel.to(x.dtype).expand(channels, 1, -1, -1)
        out = F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, stride=2, padding=2,
                                 groups=channels)
        return out[:, :, 1:-1, 1:-1]  # (H+1)*2 rows -> 2H, the reference's [1:] then [:-1] for an even filter


class CUTGenerator(nn.Module):
    """ResNet generator with blur-pool resampling, whose intermediate layers can be read out.

    Layers (with anti-aliasing, the default): 0 pad, 1 conv 7x7, 2 norm, 3 ReLU, 4 conv, 5 norm,
    6 ReLU, 7 blur-down, 8 conv, 9 norm, 10 ReLU, 11 blur-down, 12.. residual blocks, then the
    decoder. CUT reads layers 0, 4, 8, 12, 16: the padded input, the first two downsampling convs
    and the outputs of residual blocks 1 and 5 (Park et al. 2020, sec. 3 / appendix).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", dropout: bool = False, no_antialias: bool = False,
                 no_antialias_up: bool = False, init_gain: float = 0.02) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers: list[nn.Module] = []
        channels: list[int] = []  # output channels of each layer: the head is built from these

        def add(layer: nn.Module, out: int) -> None:
            layers.append(layer)
            channels.append(out)

        add(nn.ReflectionPad2d(3), in_channels)
        add(nn.Conv2d(in_channels, ngf, 7, bias=bias), ngf)
        add(make_norm(ngf), ngf)
        add(nn.ReLU(True), ngf)
        for mult in (1, 2):
            width = ngf * mult * 2
            if no_antialias:
                add(nn.Conv2d(ngf * mult, width, 3, stride=2, padding=1, bias=bias), width)
            else:
                add(nn.Conv2d(ngf * mult, width, 3, stride=1, padding=1, bias=bias), width)
            add(make_norm(width), width)
            add(nn.ReLU(True), width)
            if not no_antialias:
                add(BlurDownsample(), width)
        for _ in range(n_blocks):
            add(ResnetBlock(4 * ngf, norm, dropout), 4 * ngf)
        for mult in (4, 2):
            width = ngf * mult // 2
            if no_antialias_up:
                add(nn.ConvTranspose2d(ngf * mult, width, 3, stride=2, padding=1, output_padding=1, bias=bias), width)
            else:
                add(BlurUpsample(), ngf * mult)
                add(nn.Conv2d(ngf * mult, width, 3, stride=1, padding=1, bias=bias), width)
            add(make_norm(width), width)
            add(nn.ReLU(True), width)
        add(nn.ReflectionPad2d(3), ngf)
        add(nn.Conv2d(ngf, out_channels, 7), out_channels)
        add(nn.Tanh(), out_channels)
        self.layers = nn.Sequential(*layers)
        self.layer_channels = tuple(channels)
        init_xavier(self, init_gain)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def feature_channels(self, layer_ids: Sequence[int]) -> list[int]:
        """Channel count of each requested layer's output, known without running the network."""
        self.check_layer_ids(layer_ids)
        return [self.layer_channels[i] for i in layer_ids]

    def check_layer_ids(self, layer_ids: Sequence[int]) -> None:
        bad = [i for i in layer_ids if not 0 <= i < len(self.layers)]
        if bad:
            raise ValueError(f"layer ids {bad} do not exist: this generator has layers 0..{len(self.layers) - 1}")

    def encode(self, x: Tensor, layer_ids: Sequence[int]) -> list[Tensor]:
        """The outputs of the given layers, in the given order; stops after the deepest one."""
        wanted = set(layer_ids)
        found: dict[int, Tensor] = {}
        last = max(layer_ids)
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index in wanted:
                found[index] = x
            if index == last:
                break
        return [found[i] for i in layer_ids]


@register_generator("resnet-antialiased")
def antialiased_resnet_generator(**kwargs) -> CUTGenerator:
    """CUT's generator: the ResNet generator with blur-pool down- and upsampling."""
    return CUTGenerator(**kwargs)


class AntialiasedPatchDiscriminator(nn.Module):
    """The 70x70 PatchGAN as CUT builds it: each stride-2 4x4 conv is a stride-1 conv, then blur-pool.

    Same widths and parameter count as `PatchDiscriminator`; `no_antialias` gives back its strided
    convs (with this module's xavier init).
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 no_antialias: bool = False, init_gain: float = 0.02) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        down_stride = 2 if no_antialias else 1

        def blur() -> list[nn.Module]:
            return [] if no_antialias else [BlurDownsample()]

        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=down_stride, padding=1),
                                   nn.LeakyReLU(0.2, True), *blur()]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=down_stride, padding=1, bias=bias),
                       make_norm(ndf * mult), nn.LeakyReLU(0.2, True), *blur()]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=bias),
                   make_norm(ndf * mult), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.body = nn.Sequential(*layers)
        init_xavier(self, init_gain)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


register_discriminator("patch-antialiased")(AntialiasedPatchDiscriminator)


def l2_normalise(x: Tensor) -> Tensor:
    """x / (||x|| + 1e-7) along dim 1, the reference's `Normalize(2)` (its epsilon, not F.normalize's)."""
    return x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-7)


def flatten_positions(feature: Tensor) -> Tensor:
    """N x C x H x W -> N x (H*W) x C, positions in row-major order."""
    return feature.permute(0, 2, 3, 1).flatten(1, 2)


def draw_patch_ids(features: Sequence[Tensor], num_patches: int,
                   generator: torch.Generator | None = None) -> list[Tensor]:
    """Per layer, `num_patches` distinct positions (all of them if the map is smaller), drawn on the
    CPU from `generator` (default: the global RNG). The same ids serve every image of the batch, as
    in the reference."""
    ids = []
    for feature in features:
        positions = feature.shape[2] * feature.shape[3]
        ids.append(torch.randperm(positions, generator=generator)[:min(num_patches, positions)].to(feature.device))
    return ids


class PatchSampleHead(nn.Module):
    """Samples patch features at given positions and projects each layer's through its own MLP
    (Linear(C, nc) - ReLU - Linear(nc, nc)), then L2-normalises: the reference's `PatchSampleF`
    with `--netF mlp_sample --netF_nc 256`, built eagerly from `in_channels` (one per layer)."""

    def __init__(self, in_channels: Sequence[int], nc: int = 256, init_gain: float = 0.02) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(channels, nc), nn.ReLU(), nn.Linear(nc, nc)) for channels in in_channels)
        init_xavier(self, init_gain)

    def forward(self, features: Sequence[Tensor], patch_ids: Sequence[Tensor]) -> list[Tensor]:
        """Per layer: (N * len(ids)) x nc unit vectors, image-major (all patches of image 0 first)."""
        if len(features) != len(self.mlps):
            raise ValueError(f"{len(features)} feature maps for a head built for {len(self.mlps)} layers")
        projected = []
        for feature, ids, mlp in zip(features, patch_ids, self.mlps):
            sampled = flatten_positions(feature)[:, ids, :].flatten(0, 1)
            projected.append(l2_normalise(mlp(sampled)))
        return projected


def patch_nce_loss(query: Tensor, key: Tensor, images: int, temperature: float = 0.07,
                   negatives_from_minibatch: bool = False) -> Tensor:
    """PatchNCE (Park et al. 2020, eq. 2) per query patch: cross-entropy of picking the key at the
    same position among the keys at the other positions of the same image.

    query, key: (images * P) x C unit vectors, image-major, from the translated and the source image.
    The keys are detached (the reference's choice: gradients reach G and the head through the
    queries only). A query's own position appears once as the positive and is masked out of the
    negatives with logit -10 (before the temperature), as the reference does. With
    `negatives_from_minibatch` the negatives are the patches of every image in the batch (the
    reference's single-image setting; off for CUT and FastCUT). Returns a vector of (images * P) losses.
    """
    key = key.detach()
    channels = query.shape[1]
    positive = (query * key).sum(dim=1, keepdim=True)
    groups = 1 if negatives_from_minibatch else images
    q = query.reshape(groups, -1, channels)
    k = key.reshape(groups, -1, channels)
    patches = q.shape[1]
    negatives = torch.bmm(q, k.transpose(1, 2))
    same_position = torch.eye(patches, device=query.device, dtype=torch.bool)[None]
    negatives = negatives.masked_fill(same_position, -10.0).reshape(-1, patches)
    logits = torch.cat([positive, negatives], dim=1) / temperature
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, target, reduction="none")
