"""CUT's networks and PatchNCE: parameter counts, resampling, layer read-out, the loss, the eager head.

The reference counts are computed here by hand from the reference's published architecture
(taesungp/contrastive-unpaired-translation, models/networks.py: ResnetGenerator, NLayerDiscriminator,
PatchSampleF), layer by layer; at ngf 64 with 9 blocks that is the 11.378 M the reference prints for
resnet_9blocks. (Outside the suite, the networks were also compared with the reference's modules
loaded with the same weights: identical outputs; see the issue 16 report.)
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from i2ibench.nets.cut import (
    AntialiasedPatchDiscriminator, BlurDownsample, BlurUpsample, CUTGenerator, PatchSampleHead, draw_patch_ids,
    init_xavier, patch_nce_loss,
)

NCE_LAYERS = [0, 4, 8, 12, 16]


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def reference_generator_count(ngf: int, n_blocks: int) -> int:
    """ResnetGenerator with instance norm (every conv has a bias, as use_bias is True for it)."""
    stem = conv(3, ngf, 7)
    down = conv(ngf, 2 * ngf, 3) + conv(2 * ngf, 4 * ngf, 3)  # blur-pool layers have no parameters
    blocks = n_blocks * 2 * conv(4 * ngf, 4 * ngf, 3)
    up = conv(4 * ngf, 2 * ngf, 3) + conv(2 * ngf, ngf, 3)  # conv after the fixed upsampling (or the upconv)
    return stem + down + blocks + up + conv(ngf, 3, 7)


def reference_discriminator_count(ndf: int) -> int:
    """NLayerDiscriminator, n_layers 3, instance norm: widths ndf, 2ndf, 4ndf, 8ndf, then 1."""
    return conv(3, ndf, 4) + conv(ndf, 2 * ndf, 4) + conv(2 * ndf, 4 * ndf, 4) + conv(4 * ndf, 8 * ndf, 4) + conv(8 * ndf, 1, 4)


def reference_nce_widths(ngf: int, n_blocks: int, no_antialias: bool) -> tuple[int, ...]:
    """Output widths of the reference generator's layers 0, 4, 8, 12, 16 (its `model` Sequential).

    Anti-aliased: pad, conv 2ngf, conv 4ngf, block 1, block 5. With --no_antialias(_up) the
    strided convs have no blur-pool layer, so the same ids land elsewhere: pad, strided conv 2ngf,
    norm 4ngf, block 3, and block 7 or, with 6 blocks, the first upconv (2ngf)."""
    if not no_antialias:
        return (3, 2 * ngf, 4 * ngf, 4 * ngf, 4 * ngf)
    return (3, 2 * ngf, 4 * ngf, 4 * ngf, 4 * ngf if n_blocks >= 7 else 2 * ngf)


def reference_head_count(widths: tuple[int, ...], nc: int = 256) -> int:
    """PatchSampleF mlp_sample: per NCE layer Linear(C, nc) - ReLU - Linear(nc, nc)."""
    return sum(c * nc + nc + nc * nc + nc for c in widths)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("ngf, n_blocks", [(64, 9), (32, 6)])
@pytest.mark.parametrize("no_antialias", [False, True])
def test_parameter_counts_match_the_reference_architecture(ngf, n_blocks, no_antialias):
    generator = CUTGenerator(ngf=ngf, n_blocks=n_blocks, no_antialias=no_antialias, no_antialias_up=no_antialias)
    assert count(generator) == reference_generator_count(ngf, n_blocks)
    assert count(AntialiasedPatchDiscriminator(ndf=ngf, no_antialias=no_antialias)) == reference_discriminator_count(ngf)
    head = PatchSampleHead(generator.feature_channels(NCE_LAYERS))
    assert count(head) == reference_head_count(reference_nce_widths(ngf, n_blocks, no_antialias))
    if (ngf, n_blocks) == (64, 9):
        assert count(generator) == 11_378_179  # the reference prints "11.378 M" for resnet_9blocks
        assert count(AntialiasedPatchDiscriminator()) == 2_764_737
        assert count(head) == 560_384


def test_blur_pool_is_a_binomial_blur_then_every_second_pixel():
    x = torch.randn(2, 3, 8, 10)
    row = torch.tensor([1.0, 2.0, 1.0])
    kernel = (row[:, None] * row[None, :] / 16).expand(3, 1, 3, 3)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=3)[:, :, ::2, ::2]
    torch.testing.assert_close(BlurDownsample()(x), expected)


def test_blur_upsampling_doubles_the_size_and_keeps_constants_and_the_mean():
    up = BlurUpsample()
    constant = torch.full((1, 2, 5, 7), 0.3)
    out = up(constant)
    assert out.shape == (1, 2, 10, 14)
    torch.testing.assert_close(out, torch.full_like(out, 0.3))  # replicate padding: no darkened border
    x = torch.randn(1, 1, 6, 6)
    torch.testing.assert_close(up(x).mean(), x.mean(), atol=0.05, rtol=0)  # each input spreads over 4 outputs


def test_encoder_features_at_the_reference_layer_ids():
    torch.manual_seed(0)
    generator = CUTGenerator(ngf=8, n_blocks=5)
    x = torch.randn(2, 3, 32, 32)
    features = generator.encode(x, NCE_LAYERS)
    # padded input, first down conv (full size, before its blur-pool), second (half size), blocks 1 and 5
    assert [tuple(f.shape[1:]) for f in features] == [(3, 38, 38), (16, 32, 32), (32, 16, 16), (32, 8, 8), (32, 8, 8)]
    assert generator.feature_channels(NCE_LAYERS) == [3, 16, 32, 32, 32]
    assert torch.equal(features[-1], generator.layers[:17](x))
    assert isinstance(generator.layers[12], nn.Module) and type(generator.layers[12]).__name__ == "ResnetBlock"
    assert generator(x).shape == x.shape
    with pytest.raises(ValueError, match="layer ids \\[40\\] do not exist"):
        generator.feature_channels([0, 40])


def independent_patch_nce(query: torch.Tensor, key: torch.Tensor, images: int, temperature: float,
                          across_batch: bool = False) -> list[float]:
    """PatchNCE written out: for each query, -log softmax over [positive, negatives] in float64 loops.

    Negatives: the keys at every other position of the same image (or of the whole batch), plus the
    reference's masked own position, a logit of -10 before the temperature."""
    q, k = query.double().tolist(), key.double().tolist()
    per_image = len(q) // images
    losses = []
    for i, qi in enumerate(q):
        group = range(len(q)) if across_batch else range((i // per_image) * per_image, (i // per_image + 1) * per_image)
        dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
        positive = dot(qi, k[i]) / temperature
        negatives = [(-10.0 if j == i else dot(qi, k[j])) / temperature for j in group]
        top = max([positive, *negatives])
        log_sum = top + math.log(sum(math.exp(v - top) for v in [positive, *negatives]))
        losses.append(log_sum - positive)
    return losses


@pytest.mark.parametrize("across_batch", [False, True])
def test_patch_nce_matches_a_cross_entropy_written_out(across_batch):
    torch.manual_seed(3)
    images, patches, channels = 2, 6, 5
    query = F.normalize(torch.randn(images * patches, channels), dim=1).requires_grad_(True)
    key = F.normalize(torch.randn(images * patches, channels), dim=1).requires_grad_(True)
    ours = patch_nce_loss(query, key, images, temperature=0.07, negatives_from_minibatch=across_batch)
    assert ours.shape == (images * patches,)
    expected = independent_patch_nce(query.detach(), key.detach(), images, 0.07, across_batch)
    torch.testing.assert_close(ours.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    ours.mean().backward()
    assert query.grad is not None and key.grad is None  # keys are targets: no gradient through them


def test_patch_nce_of_matching_orthonormal_patches_has_the_closed_form():
    """q = k = orthonormal vectors: positive logit 1/T, P-1 negatives at 0, the masked one at -10/T."""
    patches, temperature = 4, 0.5  # at 0.07 the loss (2e-6) is below float32's resolution of the logits
    features = torch.eye(patches)
    loss = patch_nce_loss(features, features, images=1, temperature=temperature)
    pos = math.exp(1 / temperature)
    expected = -math.log(pos / (pos + (patches - 1) + math.exp(-10 / temperature)))
    torch.testing.assert_close(loss, torch.full((patches,), expected), rtol=1e-6, atol=1e-8)


class LazyPatchSampleHead(nn.Module):
    """The reference's way: no parameters until the first call, then one MLP per feature map sized
    from what it sees (what breaks DDP: the wrapper registered the module before they existed)."""

    def __init__(self, nc: int = 256) -> None:
        super().__init__()
        self.nc, self.mlps = nc, None

    def forward(self, features, patch_ids):
        if self.mlps is None:
            self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(f.shape[1], self.nc), nn.ReLU(), nn.Linear(self.nc, self.nc))
                                      for f in features)
            init_xavier(self, 0.02)
        out = []
        for feature, ids, mlp in zip(features, patch_ids, self.mlps):
            sampled = feature.permute(0, 2, 3, 1).reshape(feature.shape[0], -1, feature.shape[1])[:, ids, :]
            projected = mlp(sampled.reshape(-1, feature.shape[1]))
            out.append(projected / (projected.norm(dim=1, keepdim=True) + 1e-7))
        return out


def test_the_eager_head_computes_the_loss_of_a_lazily_built_one():
    torch.manual_seed(0)
    generator = CUTGenerator(ngf=8, n_blocks=5)
    source, translated = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    keys = [f.detach() for f in generator.encode(source, NCE_LAYERS)]
    queries = generator.encode(translated, NCE_LAYERS)
    ids = draw_patch_ids(keys, 16)

    torch.manual_seed(7)
    eager = PatchSampleHead(generator.feature_channels(NCE_LAYERS))  # complete before any data
    lazy = LazyPatchSampleHead()
    assert count(eager) == reference_head_count(reference_nce_widths(8, 5, False)) and count(lazy) == 0
    torch.manual_seed(7)
    lazy(keys, ids)  # built now, from the shapes it sees, with the same seeded init
    assert lazy.state_dict().keys() == eager.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(lazy.state_dict().values(), eager.state_dict().values()))
    lazy.load_state_dict(eager.state_dict())  # and the same weights whatever the init draws

    def loss(head):
        per_layer = [patch_nce_loss(q, k, 2).mean() for q, k in zip(head(queries, ids), head(keys, ids))]
        return torch.stack(per_layer).mean()

    eager_loss, lazy_loss = loss(eager), loss(lazy)
    assert torch.equal(eager_loss, lazy_loss)
    eager_grads = torch.autograd.grad(eager_loss, list(eager.parameters()), retain_graph=True)
    lazy_grads = torch.autograd.grad(lazy_loss, list(lazy.parameters()))
    for a, b in zip(eager_grads, lazy_grads):  # the same up to float32 rounding (the backward graphs differ)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()))


def test_patch_ids_are_shared_by_the_images_of_a_batch_and_never_repeat():
    torch.manual_seed(0)
    features = [torch.randn(3, 4, 5, 5), torch.randn(3, 4, 2, 2)]
    ids = draw_patch_ids(features, 10)
    assert [len(i) for i in ids] == [10, 4]  # a map smaller than num_patches gives all its positions
    assert all(len(set(i.tolist())) == len(i) for i in ids)
    head = PatchSampleHead([4, 4], nc=8)
    out = head(features, ids)
    assert [tuple(o.shape) for o in out] == [(30, 8), (12, 8)]
    # unit length up to the reference's epsilon (norm + 1e-7), which shows at init's tiny activations
    torch.testing.assert_close(out[0].norm(dim=1), torch.ones(30), atol=1e-2, rtol=0)
    # image-major: rows 10..19 are image 1's patches at the same positions as image 0's rows 0..9
    flat = features[0].permute(0, 2, 3, 1).reshape(3, 25, 4)
    projected = head.mlps[0](flat[1, ids[0]])
    torch.testing.assert_close(out[0][10:20], projected / (projected.norm(dim=1, keepdim=True) + 1e-7))
