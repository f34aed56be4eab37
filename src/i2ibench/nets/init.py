"""Weight initialisation shared by the CycleGAN family."""

from __future__ import annotations

from torch import nn


def init_normal(module: nn.Module, gain: float = 0.02, convs: bool = True) -> nn.Module:
    """N(0, gain) for conv and linear weights, zero biases; norm layers N(1, gain).

    The reference's default `--init_type normal --init_gain 0.02`
    (junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py, init_weights).

    `convs=False` initialises only the norm layers and leaves conv and linear layers at PyTorch's
    default init: what that same function does to InstaGAN's discriminator, whose spectral-norm
    wrapper has removed the convs' `weight` before it runs (sangwoomo/instagan, see nets/instagan.py).
    """

    def init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if convs:
                nn.init.normal_(m.weight, 0.0, gain)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    module.apply(init)
    return module
