"""CBAM blocks against computations written out here from the CBAM paper's equations (Woo et al.
2018, eq. 2 and 3), and the attention-residual generator's size and input shortcut."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from i2ibench.nets.attention import (CBAM, AttentionResnetBlock, AttentionResnetGenerator, ChannelAttention,
                                     SpatialAttention)


def fixed_features(n: int = 2, c: int = 8, h: int = 5, w: int = 6) -> torch.Tensor:
    """A fixed tensor whose per-channel mean and max differ, and differ across channels and positions."""
    values = torch.arange(n * c * h * w, dtype=torch.float64)
    return (torch.sin(values * 0.37) * 2 + torch.cos(values * 0.11)).reshape(n, c, h, w).float()


def set_weights(module: torch.nn.Module) -> None:
    """Deterministic, asymmetric weights, so swapped or unshared layers give other numbers."""
    with torch.no_grad():
        for k, p in enumerate(module.parameters()):
            values = torch.arange(p.numel(), dtype=torch.float64)
            p.copy_((torch.sin(values * (0.7 + 0.3 * k) + k) * 0.5).reshape(p.shape))


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def channel_map_by_hand(x: np.ndarray, w0: np.ndarray, b0: np.ndarray, w1: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """M_c = sigmoid(W1 relu(W0 avg + b0) + b1 + W1 relu(W0 max + b0) + b1), one MLP for both (eq. 2)."""
    n, c = x.shape[:2]
    out = np.zeros((n, c))
    for i in range(n):
        descriptors = [x[i].reshape(c, -1).mean(axis=1), x[i].reshape(c, -1).max(axis=1)]
        logits = np.zeros(c)
        for d in descriptors:
            hidden = np.maximum(w0 @ d + b0, 0.0)
            logits += w1 @ hidden + b1
        out[i] = [sigmoid(v) for v in logits]
    return out


def spatial_map_by_hand(x: np.ndarray, kernel: np.ndarray, bias: float) -> np.ndarray:
    """M_s = sigmoid(conv7x7([mean over channels; max over channels])), zero padding (eq. 3)."""
    n, _, h, w = x.shape
    k = kernel.shape[-1]
    pooled = np.stack([x.mean(axis=1), x.max(axis=1)], axis=1)  # N x 2 x H x W
    padded = np.pad(pooled, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    out = np.zeros((n, h, w))
    for i in range(n):
        for y in range(h):
            for z in range(w):
                out[i, y, z] = sigmoid(float((padded[i, :, y:y + k, z:z + k] * kernel).sum()) + bias)
    return out


def test_channel_attention_is_the_shared_mlp_of_avg_and_max_descriptors():
    x = fixed_features()
    module = ChannelAttention(8, reduction=4)
    set_weights(module)
    first, second = module.mlp[0], module.mlp[2]
    assert (first.in_features, first.out_features, second.out_features) == (8, 2, 8)  # C -> C/r -> C
    expected = channel_map_by_hand(x.double().numpy(), first.weight.double().detach().numpy(),
                                   first.bias.double().detach().numpy(), second.weight.double().detach().numpy(),
                                   second.bias.double().detach().numpy())
    got = module.weights(x)
    assert got.shape == (2, 8, 1, 1)
    np.testing.assert_allclose(got[:, :, 0, 0].detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(module(x).detach().numpy(), x.numpy() * expected[:, :, None, None], rtol=1e-5,
                               atol=1e-6)
    # One MLP: its parameters once (C*C/r + C/r + C/r*C + C), not once per descriptor.
    assert sum(p.numel() for p in module.parameters()) == 8 * 2 + 2 + 2 * 8 + 8


def test_channel_attention_reduction_16_and_its_floor_of_one_unit():
    assert ChannelAttention(256).mlp[0].out_features == 16  # CBAM's r = 16 at CycleGAN's 4 * ngf
    assert ChannelAttention(8).mlp[0].out_features == 1  # narrow test networks keep one hidden unit


def test_spatial_attention_is_a_7x7_conv_of_mean_and_max_over_channels():
    x = fixed_features()
    module = SpatialAttention(7)
    set_weights(module)
    assert module.conv.weight.shape == (1, 2, 7, 7)
    expected = spatial_map_by_hand(x.double().numpy(), module.conv.weight.double().detach().numpy()[0],
                                   float(module.conv.bias.detach()))
    got = module.weights(x)
    assert got.shape == (2, 1, 5, 6)
    np.testing.assert_allclose(got[:, 0].detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(module(x).detach().numpy(), x.numpy() * expected[:, None], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        SpatialAttention(4)


def test_cbam_applies_channel_then_spatial_attention():
    x = fixed_features()
    module = CBAM(8, reduction=4)
    set_weights(module)
    ca, sa = module.channel, module.spatial
    c_map = channel_map_by_hand(x.double().numpy(), ca.mlp[0].weight.double().detach().numpy(),
                                ca.mlp[0].bias.double().detach().numpy(), ca.mlp[2].weight.double().detach().numpy(),
                                ca.mlp[2].bias.double().detach().numpy())
    refined = x.double().numpy() * c_map[:, :, None, None]  # channel first ...
    s_map = spatial_map_by_hand(refined, sa.conv.weight.double().detach().numpy()[0], float(sa.conv.bias.detach()))
    expected = refined * s_map[:, None]  # ... then spatial, on the channel-refined features
    np.testing.assert_allclose(module(x).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(module(x), ca(sa(x)))  # the other order is another function


def test_attention_block_adds_the_attended_residual_branch():
    torch.manual_seed(0)
    block = AttentionResnetBlock(8, reduction=4).eval()
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(block(x), x + block.attention(block.body(x)))
    with torch.no_grad():
        block.attention.spatial.conv.bias.fill_(-1e4)  # spatial gate shut: only the identity passes
    assert torch.allclose(block(x), x)


# -- the generator ---------------------------------------------------------------------------------
def attention_generator_parameters(ngf: int, n_blocks: int, reduction: int = 16, kernel: int = 7,
                                   channels: int = 3) -> int:
    """Counted from the layer list: CycleGAN's ResNet generator with instance norm (no norm parameters,
    every conv with a bias) plus, per block, CBAM's shared MLP (with biases) and its 2->1 spatial conv."""
    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k + cout

    c = 4 * ngf
    encoder = conv(channels, ngf, 7) + conv(ngf, 2 * ngf, 3) + conv(2 * ngf, c, 3)
    hidden = max(1, c // reduction)
    block = 2 * conv(c, c, 3) + (c * hidden + hidden) + (hidden * c + c) + conv(2, 1, kernel)
    decoder = conv(c, 2 * ngf, 3) + conv(2 * ngf, ngf, 3) + conv(ngf, channels, 7)
    return encoder + n_blocks * block + decoder  # the identity shortcut has no parameters


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_by_formula():
    """At SRAGAN's config (ngf 64, 9 blocks), the smoke protocol's (32, 6) and a test width (4, 1)."""
    assert count(AttentionResnetGenerator()) == attention_generator_parameters(64, 9) == 11_455_246
    assert count(AttentionResnetGenerator(ngf=32, n_blocks=6)) == attention_generator_parameters(32, 6)
    assert count(AttentionResnetGenerator(ngf=4, n_blocks=1)) == attention_generator_parameters(4, 1)
    # A 1-channel sketch in: the shortcut is a 1x1 projection (3 weights + 3 biases).
    gray = AttentionResnetGenerator(in_channels=1, ngf=4, n_blocks=1)
    assert count(gray) == attention_generator_parameters(4, 1) - 2 * 4 * 49 + 1 * 3 + 3


def test_the_input_reaches_the_output_through_the_shortcut():
    torch.manual_seed(0)
    gen = AttentionResnetGenerator(ngf=4, n_blocks=2).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = gen(x)
    assert out.shape == x.shape and out.abs().max() < 1
    last_conv = gen.decoder[-1]
    with torch.no_grad():  # silence the body: what is left is the shortcut, then the tanh
        last_conv.weight.zero_()
        last_conv.bias.zero_()
    assert torch.allclose(gen(x), torch.tanh(x))
    plain = AttentionResnetGenerator(ngf=4, n_blocks=2, input_shortcut=False).eval()
    plain.load_state_dict(gen.state_dict())
    assert torch.equal(plain(x), torch.zeros_like(x))  # without it, nothing of the input gets through


def test_registered_as_a_generator():
    from i2ibench.registry import GENERATORS

    assert GENERATORS.get("attention-resnet") is AttentionResnetGenerator
