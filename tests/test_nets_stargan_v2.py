"""StarGAN v2 networks against the reference implementation's numbers (clovaai/stargan-v2 core/model.py)."""

from __future__ import annotations

import math

import pytest
import torch

from i2ibench.nets.stargan_v2 import (
    AdaIN,
    AdainResBlk,
    Discriminator,
    Generator,
    HighPass,
    MappingNetwork,
    StyleEncoder,
    build_stargan_v2,
)

# tiny widths so every forward is fast on a 2-core CPU
SIZE, STYLE, LATENT, DOMAINS, WIDTH, BASE = 32, 8, 4, 3, 32, 8


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def tiny_nets() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return build_stargan_v2(SIZE, STYLE, LATENT, DOMAINS, max_conv_dim=WIDTH, base_dim=BASE)


def test_parameter_counts_match_reference_at_256px():
    # The reference's solver prints "Number of parameters of generator: 43467395" etc. for its
    # default 256 px, 2-domain, w_hpf=1 build; published rounded as 43.47 M, 2.44 M, 20.92 M, 20.85 M.
    # The meta device counts parameters without allocating or initialising them.
    with torch.device("meta"):
        nets = {
            "generator": Generator(256, 64, 512, w_hpf=1),
            "mapping_network": MappingNetwork(16, 64, 2),
            "style_encoder": StyleEncoder(256, 64, 2),
            "discriminator": Discriminator(256, 2),
        }
    counts = {name: count(net) for name, net in nets.items()}
    assert {name: round(n / 1e6, 2) for name, n in counts.items()} == {
        "generator": 43.47, "mapping_network": 2.44, "style_encoder": 20.92, "discriminator": 20.85,
    }
    assert counts == {
        "generator": 43_467_395, "mapping_network": 2_438_272,
        "style_encoder": 20_916_928, "discriminator": 20_852_290,
    }


def test_reference_checkpoint_names_are_kept():
    """Reference checkpoints load by name: spot-check keys of its state dicts at 256 px, 2 domains."""
    with torch.device("meta"):
        generator, disc = Generator(256, 64, 512, w_hpf=1), Discriminator(256, 2)
    g_keys, d_keys = set(generator.state_dict()), set(disc.state_dict())
    assert {"from_rgb.weight", "encode.0.conv1x1.weight", "encode.6.norm2.weight", "decode.0.norm1.fc.weight",
            "decode.6.conv1x1.weight", "to_rgb.0.weight", "to_rgb.2.bias"} <= g_keys
    assert not any("hpf" in key for key in g_keys)  # the fixed filter is no checkpoint entry
    assert {"main.0.weight", "main.3.conv1x1.weight", "main.6.conv2.weight", "main.8.weight",
            "main.10.weight"} <= d_keys
    assert disc.main[10].out_channels == 2 and "main.11.weight" not in d_keys


def test_generator_keeps_shape_and_has_no_tanh(tiny_nets):
    generator = tiny_nets["generator"]
    x, s = torch.randn(2, 3, SIZE, SIZE), torch.randn(2, STYLE) * 10
    out = generator(x, s)
    assert out.shape == (2, 3, SIZE, SIZE)
    assert out.abs().max() > 1.0  # a 1x1 conv output, unbounded, as the reference
    assert not torch.allclose(out, generator(x, torch.randn(2, STYLE)))  # the style matters


@pytest.mark.parametrize("net_name", ["mapping_network", "style_encoder"])
def test_style_networks_pick_each_samples_domain_head(tiny_nets, net_name):
    net = tiny_nets[net_name]
    inputs = torch.randn(4, LATENT) if net_name == "mapping_network" else torch.randn(4, 3, SIZE, SIZE)
    y = torch.tensor([0, 1, 2, 1])
    s = net(inputs, y)
    assert s.shape == (4, STYLE)
    for domain in range(DOMAINS):  # sample i's code is what the whole batch gets for domain y[i]
        all_in_domain = net(inputs, torch.full((4,), domain))
        assert torch.allclose(s[y == domain], all_in_domain[y == domain])
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert not torch.allclose(net(inputs, zeros), net(inputs, ones))
    other = net(inputs, torch.tensor([0, 2, 0, 0]))  # sample 0 keeps domain 0, the others change
    assert torch.allclose(other[0], s[0])


def test_discriminator_gives_one_logit_per_sample_from_its_domain(tiny_nets):
    disc = tiny_nets["discriminator"]
    x, y = torch.randn(3, 3, SIZE, SIZE), torch.tensor([2, 0, 1])
    out = disc(x, y)
    assert out.shape == (3,)
    every_domain = disc.main(x).flatten(1)
    assert every_domain.shape == (3, DOMAINS)
    assert torch.allclose(out, every_domain[torch.arange(3), y])


def test_trunk_rejects_images_of_another_size(tiny_nets):
    with pytest.raises(ValueError, match="expected 32 x 32"):
        tiny_nets["discriminator"](torch.randn(1, 3, 2 * SIZE, 2 * SIZE), torch.tensor([0]))


def test_image_size_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        Discriminator(img_size=48)


def test_adain_is_one_plus_gamma_times_instance_norm_plus_beta():
    adain = AdaIN(style_dim=2, num_features=2)
    with torch.no_grad():  # gamma = (s0, s1), beta = (0.5, -1) from the style s = (s0, s1)
        adain.fc.weight.zero_()
        adain.fc.weight[0, 0] = adain.fc.weight[1, 1] = 1.0
        adain.fc.bias.copy_(torch.tensor([0.0, 0.0, 0.5, -1.0]))
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [2.0, 2.0]]]])
    s = torch.tensor([[1.0, -0.5]])
    eps = 1e-5  # nn.InstanceNorm2d's default; biased variance over H x W, per channel
    normalised = torch.stack([
        (x[0, 0] - 2.5) / math.sqrt(1.25 + eps),
        (x[0, 1] - 1.0) / math.sqrt(1.0 + eps),
    ])
    expected = torch.stack([(1 + 1.0) * normalised[0] + 0.5, (1 - 0.5) * normalised[1] - 1.0])
    assert torch.allclose(adain(x, s)[0], expected, atol=1e-5)


def test_adain_block_drops_its_shortcut_when_w_hpf_is_positive():
    torch.manual_seed(0)
    block = AdainResBlk(4, 8, style_dim=3, w_hpf=1, upsample=True)
    x, s = torch.randn(2, 4, 8, 8), torch.randn(2, 3)
    assert torch.equal(block(x, s), block.residual(x, s))
    block.w_hpf = 0
    expected = (block.residual(x, s) + block.shortcut(x)) / math.sqrt(2)
    assert torch.allclose(block(x, s), expected)


def test_high_pass_removes_constants_and_scales_by_one_over_w_hpf():
    x = torch.full((1, 2, 6, 6), 3.0)
    x[0, 1, 3, 3] = 4.0  # a unit spike on a constant
    out = HighPass(w_hpf=2.0)(x)
    assert torch.allclose(out[0, 0, 1:-1, 1:-1], torch.zeros(4, 4))
    assert out[0, 1, 3, 3].item() == pytest.approx(8 / 2.0)
    assert out[0, 1, 2, 2].item() == pytest.approx(-1 / 2.0)


def test_w_hpf_generator_needs_fan_masks():
    generator = Generator(img_size=64, style_dim=STYLE, max_conv_dim=WIDTH, w_hpf=1, base_dim=BASE)
    assert len(generator.encode) == 2 + 3  # one more down/up block than w_hpf=0 (2 + 2)
    x, s = torch.randn(1, 3, 64, 64), torch.randn(1, STYLE)
    with pytest.raises(RuntimeError, match="pretrained FAN landmark network.*unavailable"):
        generator(x, s)
    # with masks supplied, the masked high-pass skips run and the masks matter
    ones, zeros = (torch.ones(1, 1, 64, 64),) * 2, (torch.zeros(1, 1, 64, 64),) * 2
    assert generator(x, s, masks=ones).shape == (1, 3, 64, 64)
    assert not torch.allclose(generator(x, s, masks=ones), generator(x, s, masks=zeros))


def test_w_hpf_zero_generator_refuses_masks(tiny_nets):
    with pytest.raises(ValueError, match="takes no masks"):
        masks = (torch.ones(1, 1, 8, 8),) * 2
        tiny_nets["generator"](torch.randn(1, 3, SIZE, SIZE), torch.randn(1, STYLE), masks=masks)


def test_he_init_gives_kaiming_normal_weights_and_zero_biases():
    torch.manual_seed(0)
    nets = build_stargan_v2(32, 16, 8, 2, max_conv_dim=64, base_dim=16)
    conv = nets["discriminator"].main[-3]  # the 4x4 valid conv: 64 x 64 x 4 x 4 weights
    fan_in = conv.in_channels * 4 * 4
    # PyTorch's default init would give std 1 / sqrt(3 * fan_in), 0.41 x this
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
    linear = nets["mapping_network"].shared[2]  # 512 x 512
    assert linear.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.03)
    biases = [m.bias for net in nets.values() for m in net.modules()
              if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None]
    assert biases and all(torch.count_nonzero(b) == 0 for b in biases)
