"""The DenseNet and Inception CycleGAN generators: shape, range, width, exact size, registry, no dead branches."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

import i2ibench.nets  # noqa: F401  (registers every generator)
from i2ibench.nets.densenet import densenet_generator
from i2ibench.nets.inception_blocks import inception_generator
from i2ibench.registry import GENERATORS

VARIANTS: dict[str, Callable[..., torch.nn.Module]] = {
    "densenet": densenet_generator,
    "inception": inception_generator,
}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("size", [32, 64])
def test_generator_keeps_shape_and_tanh_range(name, size):
    torch.manual_seed(0)
    generator = VARIANTS[name](ngf=8, n_blocks=2)
    out = generator(torch.randn(2, 3, size, size) * 3)
    assert out.shape == (2, 3, size, size)
    assert out.abs().max() <= 1.0


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("ngf", [8, 16])
def test_transformer_stage_keeps_four_ngf_channels_at_quarter_resolution(name, ngf):
    generator = VARIANTS[name](ngf=ngf, n_blocks=2)
    features = generator.encoder(torch.randn(1, 3, 32, 32))
    assert generator.transformer(features).shape == (1, 4 * ngf, 8, 8)


# Encoder + decoder, shared with the ResNet generator (every conv has a bias under instance norm):
#   7x7 3->64: 9,408 + 64 = 9,472;  3x3 64->128: 73,728 + 128 = 73,856;  3x3 128->256: 294,912 + 256 = 295,168
#   convT 256->128: 294,912 + 128 = 295,040;  convT 128->64: 73,728 + 64 = 73,792;  7x7 64->3: 9,408 + 3 = 9,411
#   total 756,739 (= 11,378,179 for resnet_9blocks minus 9 blocks x 2 x (256*256*9 + 256) = 10,621,440).
ENCODER_DECODER = 9_472 + 73_856 + 295_168 + 295_040 + 73_792 + 9_411

# Dense block at C = 256, growth k = 64, 4 layers: layer i is a 3x3 conv (256 + 64 i) -> 64 with bias:
#   i=0: 256*64*9 + 64 = 147,520   i=1: 320*64*9 + 64 = 184,384
#   i=2: 384*64*9 + 64 = 221,248   i=3: 448*64*9 + 64 = 258,112     -> 811,264
#   transition 1x1 512 -> 256: 512*256 + 256 = 131,328               -> block 942,592
DENSE_BLOCK = 147_520 + 184_384 + 221_248 + 258_112 + 131_328

# Inception residual block at C = 256 (widths 64 | 96->128 | 16->32->32 | pool->32):
#   1x1 256->64: 16,448
#   1x1 256->96: 24,672;  3x3 96->128: 110,592 + 128 = 110,720
#   1x1 256->16: 4,112;   3x3 16->32: 4,608 + 32 = 4,640;  3x3 32->32: 9,216 + 32 = 9,248
#   pool, 1x1 256->32: 8,224                                          -> block 178,064
INCEPTION_BLOCK = 16_448 + 24_672 + 110_720 + 4_112 + 4_640 + 9_248 + 8_224


def test_parameter_counts_at_default_width_are_derived_from_the_layer_list():
    assert ENCODER_DECODER == 756_739 and DENSE_BLOCK == 942_592 and INCEPTION_BLOCK == 178_064
    assert count(densenet_generator()) == ENCODER_DECODER + 9 * DENSE_BLOCK == 9_240_067
    assert count(inception_generator()) == ENCODER_DECODER + 9 * INCEPTION_BLOCK == 2_359_315
    # max pooling has no parameters: the count does not depend on the pool type
    assert count(inception_generator(pool="max")) == 2_359_315


@pytest.mark.parametrize("name", VARIANTS)
def test_generators_are_registered_by_name(name):
    assert name in GENERATORS.names()
    assert GENERATORS.get(name) is VARIANTS[name]
    assert isinstance(GENERATORS.get(name)(ngf=8, n_blocks=1), torch.nn.Module)


@pytest.mark.parametrize("norm", ["instance", "batch"])
@pytest.mark.parametrize("name, options", [
    ("densenet", {}),
    ("densenet", {"layers_per_block": 3, "growth_rate": 4}),
    ("inception", {"pool": "avg"}),
    ("inception", {"pool": "max"}),
])
def test_one_step_on_l1_changes_every_parameter(name, options, norm):
    """No dead branch: every tensor gets a gradient and moves.

    Under instance norm a conv bias followed by the (affine-free) norm is cancelled exactly, as in the
    reference ResNet generator, so only weights are checked there; under batch norm the normed convs
    have no bias and every parameter tensor (conv weights, norm scales and shifts) must move. The BN
    shifts are moved off their initial 0 first: with shift 0, the encoder's last BN scale before ReLU
    is a positive rescaling that the dense block's leading norms cancel, so its gradient is exactly 0
    at initialisation only (a symmetry of the starting point, not a dead branch).
    """
    torch.manual_seed(0)
    generator = VARIANTS[name](ngf=8, n_blocks=2, norm=norm, **options)
    for module in generator.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(module.bias, 0.0, 0.1)
    checked = {n: p for n, p in generator.named_parameters() if norm == "batch" or p.dim() > 1}
    before = {n: p.detach().clone() for n, p in checked.items()}
    optimiser = torch.optim.SGD(generator.parameters(), lr=0.1)
    x, target = torch.randn(2, 3, 32, 32), torch.rand(2, 3, 32, 32) * 2 - 1
    torch.nn.functional.l1_loss(generator(x), target).backward()
    optimiser.step()
    unchanged = [n for n, p in checked.items() if torch.equal(p.detach(), before[n])]
    assert not unchanged
    assert len(checked) > 10


def test_bad_options_fail_with_a_clear_message():
    with pytest.raises(ValueError, match="multiple of 16"):
        inception_generator(ngf=6)
    with pytest.raises(ValueError, match="unknown pool"):
        inception_generator(ngf=8, pool="min")
    with pytest.raises(ValueError, match="layers_per_block"):
        densenet_generator(ngf=8, layers_per_block=0)
