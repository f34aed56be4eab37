"""InstaGAN's set generator and set discriminator (Mo, Cho & Shin, ICLR 2019).

Faithful to sangwoomo/instagan `models/networks.py` (`ResnetSetGenerator`, `NLayerSetDiscriminator`):
an image and a *set* of instance masks go in; each mask passes through ONE shared encoder, and the
set feature is the sum of those features, so nothing depends on the order of the instances.

Masks follow the reference's convention (`data/unaligned_seg_dataset.py`): one channel per instance,
values in [-1, 1] (a {0, 1} mask becomes `2 * m - 1`), and an unused padded slot is all -1. A slot
is an instance when any of its pixels is above -1, i.e. `(mask + 1).sum() > 0`, the reference's
test; empty slots are neither encoded nor added to the set, and come out of the generator
unchanged (still all -1). If a sample has no instance at all, its slot 0 is treated as one, as
the reference does ("forward at least one segmentation").

One deliberate difference: the reference decides emptiness over the whole batch and sums the mask
features over the batch dimension too, so with batch > 1 one sample's instances leak into another
sample's set feature (its own training runs use batch 1 per GPU). Here both are per sample; at
batch 1 the two agree.

The discriminator's initialisation is the reference's as it really runs, not as its options read:
`init_weights` (N(0, 0.02) weights, zero biases) never reaches the discriminator's convs, because
its `SpectralNorm` wrapper has already replaced each conv's `weight` by `weight_bar`, so
`hasattr(m, "weight")` is false. The convs keep PyTorch's default init: weights kaiming-uniform
(a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))) and non-zero biases from the same bound.
Only norm layers with parameters (`norm: batch`) get the reference's N(1, 0.02). The generator is
reached and gets N(0, 0.02).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from i2ibench.nets.init import init_normal
from i2ibench.nets.norms import conv_bias, norm_layer
from i2ibench.nets.resnet import ResnetBlock, resnet_decoder, resnet_encoder


def instance_slots(masks: Tensor) -> tuple[Tensor, Tensor]:
    """(sample index, slot index) of every non-empty mask slot of a B x K x H x W mask tensor.

    A slot is non-empty when some pixel exceeds -1 (the reference's `(segs + 1).mean() > 0`). A
    sample with no instance keeps its slot 0, as the reference forwards at least one mask.
    """
    present = (masks.detach() + 1).flatten(2).sum(-1) > 0
    present[:, 0] |= ~present.any(dim=1)
    samples, slots = present.nonzero(as_tuple=True)
    return samples, slots


def sum_per_sample(features: Tensor, index: tuple[Tensor, Tensor], batch: int, slots: int) -> Tensor:
    """Sum the per-instance features of each sample: N x C x h x w -> B x C x h x w.

    Placing the features into a zero-filled B x K grid and summing over K keeps every sample's
    set to itself (the reference sums over the batch too, see the module docstring) and, unlike
    `index_add`, is deterministic on GPU.
    """
    grid = features.new_zeros(batch, slots, *features.shape[1:])
    return grid.index_put(index, features).sum(dim=1)


def _check_inputs(image: Tensor, masks: Tensor) -> None:
    if masks.dim() != 4 or masks.shape[0] != image.shape[0] or masks.shape[2:] != image.shape[2:] \
            or masks.shape[1] == 0:
        raise ValueError(f"masks must be B x K x H x W (K >= 1, padded with all -1 slots) matching the image "
                         f"{tuple(image.shape)}, got {tuple(masks.shape)}")


class InstaGANGenerator(nn.Module):
    """`ResnetSetGenerator`: (image, instance masks) -> (translated image, translated masks).

    Two CycleGAN ResNet encoders (7x7 stem, two stride-2 convs, `n_blocks` residual blocks): one for
    the image, one shared by all instance masks. The image decoder reads [image feature, set
    feature] (8 ngf channels, hence the reference's decoder width 2 ngf); the shared mask decoder
    reads [own mask feature, image feature, set feature] per instance (12 ngf, width 3 ngf). Both
    decoders are CycleGAN's transposed-conv decoder ending in tanh. The reference's `define_G`
    builds it with 9 blocks and no dropout (`--no_dropout` is InstaGAN's default).
    """

    def __init__(self, in_channels: int = 3, ngf: int = 64, n_blocks: int = 9, norm: str = "instance",
                 *, out_channels: int | None = None, dropout: bool = False) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.image_encoder = self._encoder(in_channels, ngf, n_blocks, norm, dropout)
        self.mask_encoder = self._encoder(1, ngf, n_blocks, norm, dropout)
        self.image_decoder = resnet_decoder(out_channels, 2 * ngf, norm)
        self.mask_decoder = resnet_decoder(1, 3 * ngf, norm)
        init_normal(self)

    @staticmethod
    def _encoder(in_channels: int, ngf: int, n_blocks: int, norm: str, dropout: bool) -> nn.Sequential:
        """The reference's `get_encoder`: stem and downsampling, then the residual blocks."""
        blocks = [ResnetBlock(4 * ngf, norm, dropout) for _ in range(n_blocks)]
        return nn.Sequential(*resnet_encoder(in_channels, ngf, norm), *blocks)

    def forward(self, image: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """image B x C x H x W and masks B x K x H x W, both in [-1, 1]; H and W divisible by 4.

        Returns the image B x C_out x H x W and the masks B x K x H x W, in [-1, 1]; empty slots
        come back as they went in (all -1).
        """
        _check_inputs(image, masks)
        batch, slots = masks.shape[:2]
        index = instance_slots(masks)
        samples = index[0]

        image_feature = self.image_encoder(image)
        mask_features = self.mask_encoder(masks[index].unsqueeze(1))  # N x 4ngf x H/4 x W/4
        set_feature = sum_per_sample(mask_features, index, batch, slots)

        out_image = self.image_decoder(torch.cat([image_feature, set_feature], dim=1))
        per_instance = torch.cat([mask_features, image_feature[samples], set_feature[samples]], dim=1)
        decoded = self.mask_decoder(per_instance).squeeze(1).to(masks.dtype)  # bf16 under autocast
        out_masks = masks.index_put(index, decoded)
        return out_image, out_masks


def _feature_extractor(in_channels: int, ndf: int, n_layers: int, norm: str) -> nn.Sequential:
    """The reference's `get_feature_extractor`: the first `n_layers` stride-2 convs of a PatchGAN.

    ndf, 2 ndf, ..., ndf * min(2 ** (n_layers - 1), 8) channels at 1 / 2 ** n_layers of the input.
    """
    make_norm, bias = norm_layer(norm), conv_bias(norm)
    layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers):
        prev, mult = mult, min(2**n, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=bias),
            make_norm(ndf * mult), nn.LeakyReLU(0.2, True),
        ]
    return nn.Sequential(*layers)


def _classifier(ndf: int, n_layers: int, norm: str) -> nn.Sequential:
    """The reference's `get_classifier(2 * ndf, ...)`: a stride-1 conv, norm, LeakyReLU, 1-channel conv.

    Input is [image feature, set feature]; its first conv always has a bias in the reference.
    """
    width, prev, mult = 2 * ndf, min(2 ** (n_layers - 1), 8), min(2**n_layers, 8)
    return nn.Sequential(
        nn.Conv2d(width * prev, width * mult, 4, stride=1, padding=1),
        norm_layer(norm)(width * mult), nn.LeakyReLU(0.2, True),
        nn.Conv2d(width * mult, 1, 4, stride=1, padding=1),
    )


class InstaGANDiscriminator(nn.Module):
    """`NLayerSetDiscriminator`: a PatchGAN score map for an (image, instance masks) pair.

    An image trunk and one mask trunk shared by all instances; the mask features are summed per
    sample and the classifier reads [image feature, set feature]. Every conv is spectrally
    normalised, as in the reference; no sigmoid (LSGAN). The reference's `define_D` always passes
    n_layers=3.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        self.image_features = _feature_extractor(in_channels, ndf, n_layers, norm)
        self.mask_features = _feature_extractor(1, ndf, n_layers, norm)
        self.classifier = _classifier(ndf, n_layers, norm)
        init_normal(self, convs=False)  # convs keep PyTorch's default init, as in the reference (module docstring)
        # after init: the parametrisation's power iteration starts from the initialised weight
        for conv in [m for m in self.modules() if isinstance(m, nn.Conv2d)]:
            spectral_norm(conv)

    def forward(self, image: Tensor, masks: Tensor) -> Tensor:
        """image B x C x H x W, masks B x K x H x W in [-1, 1] -> scores B x 1 x h x w."""
        _check_inputs(image, masks)
        index = instance_slots(masks)
        set_feature = sum_per_sample(self.mask_features(masks[index].unsqueeze(1)), index, *masks.shape[:2])
        return self.classifier(torch.cat([self.image_features(image), set_feature], dim=1))
