"""StarGAN (Choi et al., CVPR 2018) networks: a label-conditioned generator and a critic with a domain classifier.

Architecture and defaults follow the reference implementation yunjey/stargan (MIT), model.py;
module names mirror its `state_dict` keys (`main.*`, `conv1`, `conv2`), so the reference's
`{iters}-G.ckpt` / `{iters}-D.ckpt` files load into these classes unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class InstanceStatsNorm(nn.InstanceNorm2d):
    """Instance norm (affine, with running statistics tracked) that always normalises by each image's own statistics.

    The reference builds `InstanceNorm2d(affine=True, track_running_stats=True)` and never calls
    `G.eval()`: it trains and tests with per-image statistics, and the running averages are only
    accumulated (they are in its checkpoints). Under `eval()` current PyTorch would normalise by
    those running averages instead, which the reference never does (yunjey/stargan issue #140).
    So: per-image statistics always; the running buffers are updated in training mode only, so
    evaluating never changes the model's state.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=True, track_running_stats=True)

    def forward(self, x: Tensor) -> Tensor:
        track = self.training  # running averages: accumulated while training, never used
        return F.instance_norm(x, self.running_mean if track else None, self.running_var if track else None,
                               self.weight, self.bias, True, self.momentum if self.momentum is not None else 0.0,
                               self.eps)


class ResidualBlock(nn.Module):
    """conv 3x3 - IN - ReLU - conv 3x3 - IN, plus the input (model.py ResidualBlock; convolutions without bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), InstanceStatsNorm(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), InstanceStatsNorm(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.main(x)


class Generator(nn.Module):
    """Image + target-domain one-hot (broadcast over the image) -> translated image in [-1, 1].

    conv 7x7 (conv_dim) -> 2 stride-2 convs (x2 channels each) -> repeat_num residual blocks ->
    2 stride-2 transposed convs -> conv 7x7 to RGB, tanh. Zero padding throughout: the reference
    notes that its label conditioning fails with reflection padding (the constant label planes
    would carry no signal through instance norm).
    """

    def __init__(self, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3 + c_dim, conv_dim, 7, 1, 3, bias=False), InstanceStatsNorm(conv_dim),
                                   nn.ReLU(inplace=True)]
        dim = conv_dim
        for _ in range(2):
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1, bias=False), InstanceStatsNorm(dim * 2), nn.ReLU(inplace=True)]
            dim *= 2
        layers += [ResidualBlock(dim) for _ in range(repeat_num)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(dim, dim // 2, 4, 2, 1, bias=False), InstanceStatsNorm(dim // 2),
                       nn.ReLU(inplace=True)]
            dim //= 2
        layers += [nn.Conv2d(dim, 3, 7, 1, 3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x: N x 3 x H x W; c: N x c_dim target label (a one-hot for single-label datasets)."""
        planes = c.to(x.dtype).view(*c.shape, 1, 1).expand(-1, -1, x.shape[2], x.shape[3])
        return self.main(torch.cat([x, planes], dim=1))


def classifier_kernel(image_size: int, repeat_num: int) -> int:
    """The domain classifier's kernel: the side of the final feature map, image_size / 2**repeat_num."""
    kernel, remainder = divmod(image_size, 2 ** repeat_num)
    if kernel < 1 or remainder:
        raise ValueError(f"image_size {image_size} must be a positive multiple of 2**d_repeat_num = {2 ** repeat_num} "
                         f"(the discriminator halves it d_repeat_num times); change image_size or d_repeat_num")
    return kernel


class Discriminator(nn.Module):
    """PatchGAN critic with an auxiliary domain classifier (model.py Discriminator).

    repeat_num stride-2 4x4 convs (with bias, LeakyReLU 0.01, no normalisation), doubling the
    width from conv_dim; then `conv1` (3x3, no bias) gives the real/fake map (N x 1 x h x w) and
    `conv2` (kernel = the final map's side, no bias) the domain logits (N x c_dim).
    """

    def __init__(self, image_size: int = 128, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6) -> None:
        super().__init__()
        kernel = classifier_kernel(image_size, repeat_num)
        layers: list[nn.Module] = [nn.Conv2d(3, conv_dim, 4, 2, 1), nn.LeakyReLU(0.01)]
        dim = conv_dim
        for _ in range(1, repeat_num):
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1), nn.LeakyReLU(0.01)]
            dim *= 2
        self.main = nn.Sequential(*layers)
        self.conv1 = nn.Conv2d(dim, 1, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(dim, c_dim, kernel, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(real/fake map N x 1 x h x w, domain logits N x c_dim)."""
        features = self.main(x)
        return self.conv1(features), self.conv2(features).flatten(1)
