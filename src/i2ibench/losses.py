"""Training losses shared by the methods: adversarial objectives and reconstruction terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

GAN_MODES = ("lsgan", "vanilla", "hinge")


def generator_adversarial_loss(fake_logits: Tensor, mode: str) -> Tensor:
    """The generator's loss for discriminator outputs on its fakes.

    lsgan: Mao et al. 2017, MSE to 1 (CycleGAN's default); vanilla: non-saturating BCE with
    logits (Goodfellow et al. 2014); hinge: -D(G(x)) (Lim & Ye 2017, Miyato et al. 2018).
    """
    if mode == "lsgan":
        return F.mse_loss(fake_logits, torch.ones_like(fake_logits))
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if mode == "hinge":
        return -fake_logits.mean()
    raise ValueError(f"unknown GAN loss {mode!r}; use one of {GAN_MODES}")


def discriminator_adversarial_loss(real_logits: Tensor, fake_logits: Tensor, mode: str) -> Tensor:
    """The discriminator's loss: real + fake terms, halved as the CycleGAN reference does (slows D)."""
    if mode == "lsgan":
        real = F.mse_loss(real_logits, torch.ones_like(real_logits))
        fake = F.mse_loss(fake_logits, torch.zeros_like(fake_logits))
    elif mode == "vanilla":
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    elif mode == "hinge":
        real = F.relu(1.0 - real_logits).mean()
        fake = F.relu(1.0 + fake_logits).mean()
    else:
        raise ValueError(f"unknown GAN loss {mode!r}; use one of {GAN_MODES}")
    return 0.5 * (real + fake)
