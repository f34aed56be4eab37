"""InstaGAN's set generator and set discriminator against sangwoomo/instagan `models/networks.py`."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize
from torch.testing import assert_close

from i2ibench.nets.instagan import InstaGANDiscriminator, InstaGANGenerator

SIZE = 32


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def make_inputs(instances: list[int], slots: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [-1, 1] and masks in [-1, 1]: `instances[b]` random rectangles, other slots all -1."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(len(instances), 3, SIZE, SIZE, generator=gen) * 2 - 1
    masks = -torch.ones(len(instances), slots, SIZE, SIZE)
    for b, n in enumerate(instances):
        for k in range(n):
            top, left = torch.randint(0, SIZE // 2, (2,), generator=gen).tolist()
            height, width = torch.randint(4, SIZE // 2, (2,), generator=gen).tolist()
            masks[b, k, top:top + height, left:left + width] = 1.0
    return image, masks


@pytest.fixture(scope="module")
def generator() -> InstaGANGenerator:
    torch.manual_seed(0)
    return InstaGANGenerator(ngf=8, n_blocks=1).eval()


@pytest.fixture(scope="module")
def discriminator() -> InstaGANDiscriminator:
    torch.manual_seed(0)
    return InstaGANDiscriminator(ndf=8).eval()


def test_parameter_counts_at_default_sizes_match_the_reference_layer_list():
    # The reference documents no counts; derived by hand from its layer list (instance norm: every
    # conv has a bias, the norms have no parameters), and equal to a transcription of the reference.
    # Generator, ngf 64, 9 blocks:
    #   image encoder  3*64*49+64 + 64*128*9+128 + 128*256*9+256 + 9 * 2*(256*256*9+256)  = 10,999,936
    #   mask encoder   1*64*49+64 + (the same downsampling and blocks)                    = 10,993,664
    #   image decoder  (width 2ngf) 512*256*9+256 + 256*128*9+128 + 128*3*49+3             =  1,493,763
    #   mask decoder   (width 3ngf) 768*384*9+384 + 384*192*9+192 + 192*1*49+1             =  3,327,745
    assert count(InstaGANGenerator(ngf=64, n_blocks=9)) == 26_815_108
    # Discriminator, ndf 64, n_layers 3 (4x4 convs):
    #   image trunk    3*64*16+64 + 64*128*16+128 + 128*256*16+256                        =    658,880
    #   mask trunk     1*64*16+64 + 64*128*16+128 + 128*256*16+256                        =    656,832
    #   classifier     (width 2ndf) 512*1024*16+1024 + 1024*1*16+1                         =  8,406,017
    # The reference prints 9,754,434 because its SpectralNorm stores u and v (1,921 + 30,784
    # numbers) as frozen nn.Parameters; torch's parametrisation keeps them as buffers.
    assert count(InstaGANDiscriminator(ndf=64, n_layers=3)) == 9_721_729


def test_generator_shapes_and_tanh_range(generator):
    image, masks = make_inputs([2, 3], slots=4)
    out_image, out_masks = generator(image * 3, masks)
    assert out_image.shape == (2, 3, SIZE, SIZE) and out_masks.shape == (2, 4, SIZE, SIZE)
    assert out_image.abs().max() <= 1.0 and out_masks.abs().max() <= 1.0


def test_generator_is_invariant_to_the_order_of_instances(generator):
    image, masks = make_inputs([3, 2], slots=4)
    order = torch.tensor([2, 0, 3, 1])
    out_image, out_masks = generator(image, masks)
    perm_image, perm_masks = generator(image, masks[:, order])
    assert_close(perm_image, out_image, atol=1e-5, rtol=0)
    assert_close(perm_masks, out_masks[:, order], atol=1e-5, rtol=0)


def test_generator_does_not_mix_samples_of_a_batch(generator):
    # the reference sums mask features over the whole batch; here sample 0 must not see sample 1
    image, masks = make_inputs([2, 3], slots=3)
    fewer = masks.clone()
    fewer[1, 1:] = -1.0  # sample 1 with one instance instead of three
    image_a, masks_a = generator(image, masks)
    image_b, masks_b = generator(image, fewer)
    image_alone, masks_alone = generator(image[:1], masks[:1])
    assert_close(image_a[0], image_b[0], atol=1e-5, rtol=0)
    assert_close(masks_a[0], masks_b[0], atol=1e-5, rtol=0)
    assert_close(image_a[:1], image_alone, atol=1e-5, rtol=0)
    assert_close(masks_a[:1], masks_alone, atol=1e-5, rtol=0)
    assert (image_a[1] - image_b[1]).abs().max() > 1e-4  # sample 1's own set did change its output


def test_padded_empty_slots_are_ignored_and_returned_unchanged(generator):
    image, masks = make_inputs([2, 1], slots=2)
    padded = torch.cat([masks, -torch.ones(2, 2, SIZE, SIZE)], dim=1)
    out_image, out_masks = generator(image, masks)
    pad_image, pad_masks = generator(image, padded)
    assert_close(pad_image, out_image, atol=1e-5, rtol=0)
    assert_close(pad_masks[:, :2], out_masks, atol=1e-5, rtol=0)
    assert torch.equal(pad_masks[:, 2:], padded[:, 2:])  # still all -1, exactly
    assert torch.equal(out_masks[1, 1], masks[1, 1])  # an empty slot inside K too
    assert not torch.equal(out_masks[0, 1], masks[0, 1])  # an instance is translated


def test_a_sample_without_instances_forwards_its_slot_0_like_the_reference(generator):
    image, masks = make_inputs([0, 2], slots=3)
    out_image, out_masks = generator(image, masks)
    assert torch.isfinite(out_image).all()
    assert not torch.equal(out_masks[0, 0], masks[0, 0])  # slot 0 decoded ("forward at least one")
    assert torch.equal(out_masks[0, 1:], masks[0, 1:])


def test_the_set_feature_reaches_the_image_output(generator):
    image, masks = make_inputs([2], slots=2)
    generator.zero_grad()
    generator(image, masks)[0].square().sum().backward()
    first_mask_conv = generator.mask_encoder[1]
    assert first_mask_conv.weight.grad is not None and first_mask_conv.weight.grad.abs().sum() > 0
    generator.zero_grad()


def test_masks_that_do_not_match_the_image_are_rejected(generator):
    image, masks = make_inputs([1], slots=2)
    with pytest.raises(ValueError, match="B x K x H x W"):
        generator(image, masks[..., :16])


def test_discriminator_gives_one_score_map_per_sample(discriminator):
    image, masks = make_inputs([2, 3], slots=4)
    scores = discriminator(image, masks)
    # three stride-2 convs (32 -> 4), then two 4x4 stride-1 convs with padding 1 (4 -> 3 -> 2)
    assert scores.shape == (2, 1, 2, 2)


def test_discriminator_is_invariant_to_order_and_does_not_mix_samples(discriminator):
    image, masks = make_inputs([3, 2], slots=4)
    scores = discriminator(image, masks)
    assert_close(discriminator(image, masks[:, [3, 1, 0, 2]]), scores, atol=1e-5, rtol=0)
    assert_close(discriminator(image[:1], masks[:1]), scores[:1], atol=1e-5, rtol=0)
    padded = torch.cat([masks, -torch.ones(2, 1, SIZE, SIZE)], dim=1)
    assert_close(discriminator(image, padded), scores, atol=1e-5, rtol=0)


def test_discriminator_spectral_norm_wraps_every_conv_at_pytorch_default_init():
    torch.manual_seed(0)
    disc = InstaGANDiscriminator(ndf=16)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8  # 3 image trunk + 3 mask trunk + 2 classifier, as the reference
    assert all(parametrize.is_parametrized(conv, "weight") for conv in convs)
    classifier_conv = disc.classifier[0]
    sigma = torch.linalg.matrix_norm(classifier_conv.weight.flatten(1), ord=2)
    assert abs(sigma.item() - 1.0) < 0.05  # 15 power iterations at registration


def test_discriminator_keeps_pytorch_default_init_as_the_reference_does():
    """The reference's init_weights cannot see convs inside its SpectralNorm wrapper (their `weight`
    is gone), so its D keeps nn.Conv2d's own init: U(-b, b) weights and biases, b = 1 / sqrt(fan_in).
    i2ibench used to give them N(0, 0.02) and zero biases; the generator does get N(0, 0.02)."""
    torch.manual_seed(0)
    disc = InstaGANDiscriminator(ndf=16)
    for name, conv in [(n, m) for n, m in disc.named_modules() if isinstance(m, torch.nn.Conv2d)]:
        weight = conv.parametrizations.weight.original
        bound = 1.0 / weight[0].numel() ** 0.5  # kaiming_uniform_(a=sqrt(5)) on fan_in = in_channels * k * k
        assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound, name
        assert abs(weight.std().item() - bound / 3 ** 0.5) < 0.1 * bound / 3 ** 0.5, name  # std of U(-b, b)
        assert conv.bias is not None and torch.count_nonzero(conv.bias) == conv.bias.numel(), name
        assert conv.bias.abs().max() <= bound, name
        assert conv.bias.numel() == 1 or conv.bias.std() > 0.3 * bound, name  # spread over U(-b, b), not a constant
    generator_conv = InstaGANGenerator(ngf=8, n_blocks=1).image_encoder[1]
    assert abs(generator_conv.weight.std().item() - 0.02) < 2e-3 and torch.count_nonzero(generator_conv.bias) == 0


def test_discriminator_batch_norm_gets_the_reference_normal_init():
    torch.manual_seed(0)
    norms = [m for m in InstaGANDiscriminator(ndf=16, norm="batch").modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(abs(n.weight.mean().item() - 1.0) < 0.01 and 0.01 < n.weight.std().item() < 0.03
                         and torch.count_nonzero(n.bias) == 0 for n in norms)
