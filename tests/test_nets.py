"""Networks against the reference implementation's numbers."""

from __future__ import annotations

import pytest
import torch

from i2ibench.nets.patchgan import PatchDiscriminator
from i2ibench.nets.resnet import resnet_generator


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet_generator_parameter_count_matches_reference():
    # junyanz/pytorch-CycleGAN-and-pix2pix prints 11.378 M for netG resnet_9blocks, ngf 64
    assert count(resnet_generator(ngf=64, n_blocks=9)) == 11_378_179


def test_patch_discriminator_parameter_count_matches_reference():
    # ... and 2.765 M for netD basic (n_layers 3), ndf 64
    assert count(PatchDiscriminator(ndf=64, n_layers=3)) == 2_764_737


@pytest.mark.parametrize("size", [32, 48, 64])
def test_generator_keeps_shape_and_range(size):
    generator = resnet_generator(ngf=8, n_blocks=2)
    out = generator(torch.randn(2, 3, size, size) * 3)
    assert out.shape == (2, 3, size, size)
    assert out.abs().max() <= 1.0  # tanh output


def test_patch_discriminator_receptive_field_is_70():
    """A change in one input pixel reaches a 70x70 neighbourhood of patch outputs, no more."""
    disc = PatchDiscriminator(ndf=8, norm="none")
    x = torch.zeros(1, 3, 140, 140, requires_grad=True)
    disc(x)[0, 0, 7, 7].backward()
    rows = x.grad.abs().sum(dim=(0, 1, 3)).nonzero().flatten()
    assert rows.max() - rows.min() + 1 == 70


def test_initialisation_is_normal_002():
    weight = resnet_generator(ngf=64, n_blocks=1).encoder[1].weight
    assert abs(weight.mean().item()) < 1e-3 and abs(weight.std().item() - 0.02) < 1e-3


def test_spectral_norm_wraps_every_conv_after_init():
    disc = PatchDiscriminator(ndf=8, spectral_norm=True)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5 and all(hasattr(c, "parametrizations") for c in convs)
    # spectral norm of each effective weight is ~1 after one power iteration
    sigma = torch.linalg.matrix_norm(convs[1].weight.flatten(1), ord=2)
    assert sigma < 1.5
