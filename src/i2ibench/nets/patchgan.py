"""The 70x70 PatchGAN discriminator (Isola et al. 2017), as CycleGAN uses it."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from i2ibench.nets.init import init_normal
from i2ibench.nets.norms import conv_bias, norm_layer
from i2ibench.registry import register_discriminator


class PatchDiscriminator(nn.Module):
    """4x4 convs ndf, 2ndf, 4ndf at stride 2, 8ndf at stride 1, then 1 channel; LeakyReLU 0.2, no sigmoid.

    junyanz/pytorch-CycleGAN-and-pix2pix `NLayerDiscriminator` with n_layers=3 has a 70x70 receptive
    field. `spectral_norm` wraps every conv (used by the mask-guided CycleGAN).
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 spectral_norm: bool = False) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                make_norm(ndf * mult), nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.body = nn.Sequential(*layers)
        init_normal(self)
        if spectral_norm:  # after init: the parametrisation reads the initialised weight
            for conv in [m for m in self.body if isinstance(m, nn.Conv2d)]:
                apply_spectral_norm(conv)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


register_discriminator("patch")(PatchDiscriminator)
