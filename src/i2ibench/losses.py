"""Training losses shared by the methods: adversarial objectives and reconstruction terms."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from i2ibench.errors import ConfigError
from i2ibench.ssim import ssim_per_image

GAN_MODES = ("lsgan", "vanilla", "hinge")
# Wasserstein critics (Arjovsky et al. 2017): their critic step also needs a Lipschitz constraint,
# either a gradient penalty (`gradient_penalty`) or weight clipping (`clip_weights_`), so only
# methods whose step applies one accept these (DualGAN); GAN_MODES stays the plain choices.
WGAN_MODES = ("wgan-gp", "wgan-clip")


def generator_adversarial_loss(fake_logits: Tensor, mode: str) -> Tensor:
    """The generator's loss for discriminator outputs on its fakes.

    lsgan: Mao et al. 2017, MSE to 1 (CycleGAN's default); vanilla: non-saturating BCE with
    logits (Goodfellow et al. 2014); hinge and the Wasserstein modes: -D(G(x)) (Lim & Ye 2017,
    Miyato et al. 2018; Arjovsky et al. 2017).
    """
    if mode == "lsgan":
        return F.mse_loss(fake_logits, torch.ones_like(fake_logits))
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if mode == "hinge" or mode in WGAN_MODES:
        return -fake_logits.mean()
    raise ValueError(f"unknown GAN loss {mode!r}; use one of {GAN_MODES + WGAN_MODES}")


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


def wasserstein_critic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The WGAN critic's loss E[D(fake)] - E[D(real)] (Arjovsky et al. 2017), not halved.

    Its Lipschitz constraint is applied separately (`gradient_penalty` or `clip_weights_`).
    """
    return fake_logits.mean() - real_logits.mean()


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, epsilon: Tensor | None = None) -> Tensor:
    """WGAN-GP's penalty (Gulrajani et al. 2017): mean over samples of (||grad_x D(x_hat)||_2 - 1)^2.

    x_hat = real + epsilon * (fake - real), epsilon ~ U[0, 1) per sample (drawn from the global
    RNG unless given, shape N x 1 x 1 x 1). The norm is sqrt(1e-8 + sum of squares) over each
    sample's pixels, as duxingren14/DualGAN model.py computes it (the 1e-8 keeps the gradient of
    the norm finite at 0). The graph is kept, so the penalty trains the critic's parameters.
    """
    if epsilon is None:
        epsilon = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    fake = fake.detach()
    interpolated = (real.detach() + epsilon * (fake - real.detach())).requires_grad_(True)
    scores = critic(interpolated)
    (grad,) = torch.autograd.grad(scores.sum(), interpolated, create_graph=True)
    slopes = torch.sqrt(1e-8 + grad.flatten(1).pow(2).sum(1))
    return (slopes - 1.0).pow(2).mean()


@torch.no_grad()
def clip_weights_(module: nn.Module, clip_value: float) -> None:
    """Clamp every parameter of `module` to [-clip_value, clip_value] in place (WGAN's weight clipping).

    Every parameter, norm scales and biases included, as the WGAN and DualGAN references clip all
    critic variables.
    """
    for param in module.parameters():
        param.clamp_(-clip_value, clip_value)


def ssim_loss(reconstructed: Tensor, real: Tensor) -> Tensor:
    """1 - SSIM(real, reconstructed) on images in [-1, 1] (scaled to [0, 1]); Gaussian 11x11, sigma 1.5.

    The reconstruction term of SSIM+LSGAN (Dong & Zhao 2019): structure, luminance and contrast
    rather than per-pixel L1. Differentiable; the same SSIM as the evaluation's (`i2ibench.ssim`).
    """
    return 1.0 - ssim_per_image(reconstructed.add(1).mul(0.5), real.add(1).mul(0.5)).mean()


PERCEPTUAL_NETWORKS = ("vgg16", "inception")


class PerceptualLoss(nn.Module):
    """L1 distance between frozen network features of two images (Johnson et al. 2016).

    - `vgg16`: torchvision's ImageNet VGG-16 up to relu3_3, the usual perceptual-loss layer
      (the DenseNet-CycleGAN paper's choice); its weights are downloaded once by torchvision.
    - `inception`: the TF-FID InceptionV3 the metrics load (offline weights work), through
      Mixed_5d (288 channels at 1/8 resolution), at the image's own size: no 299 px resize.
    Weights that are missing, truncated or of another layout raise `WeightsError` (a UserError)
    here, when the method is built, i.e. before the first training step.
    """

    def __init__(self, network: str = "vgg16", inception_weights: str | None = None) -> None:
        super().__init__()
        if network == "vgg16":
            self.features, self.preprocess = _vgg16_relu3_3(), _imagenet_normalise
        elif network == "inception":
            self.features, self.preprocess = _inception_mixed_5d(inception_weights), _inception_normalise
        else:
            raise ConfigError(f"model.init_args.perceptual_network: unknown value {network!r}; use one of "
                              f"{', '.join(PERCEPTUAL_NETWORKS)}")
        self.network = network
        self.features.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)  # frozen: batch norm statistics stay those of the pretrained net

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return F.l1_loss(self.features(self.preprocess(x)), self.features(self.preprocess(y)))


def _imagenet_normalise(x: Tensor) -> Tensor:
    mean = x.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = x.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x.add(1).mul(0.5) - mean) / std


def _inception_normalise(x: Tensor) -> Tensor:
    return x  # the TF-FID Inception takes (pixel - 128) / 128, i.e. images in [-1, 1]


def _vgg16_relu3_3() -> nn.Module:
    from torchvision.models import VGG16_Weights, vgg16

    from i2ibench.metrics.inception import WeightsError

    weights = VGG16_Weights.IMAGENET1K_V1
    try:
        return vgg16(weights=weights).features[:16]
    except Exception as err:  # no network (download fails) or a truncated / corrupt cached file
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        detail = " ".join(str(err).split())[:160] or type(err).__name__
        state = (f"{cached} is there but cannot be loaded ({detail}); delete it so it is downloaded again"
                 if cached.is_file() else f"{cached} is missing and could not be downloaded ({detail})")
        raise WeightsError(
            f"the VGG-16 perceptual loss needs torchvision's ImageNet weights: {state}. Offline, copy "
            f"{cached.name} there, or set model.init_args.perceptual_network: inception (the metrics' Inception "
            "weights).") from err


def _inception_mixed_5d(weights: str | None) -> nn.Module:
    from i2ibench.metrics.inception import load_inception

    net, _ = load_inception(weights, setting="model.init_args.perceptual_weights")
    layers = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
              "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d"]
    return nn.Sequential(*(getattr(net, name) for name in layers))


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over batch and latent, not averaged (as BicycleGAN's and
    DRIT++'s references compute it)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def reparameterise(mu: Tensor, logvar: Tensor) -> Tensor:
    """z ~ N(mu, exp(logvar)), differentiable in mu and logvar (Kingma & Welling 2014)."""
    return mu + torch.randn_like(mu) * logvar.mul(0.5).exp()


def mode_seeking_loss(fake_1: Tensor, fake_2: Tensor, z_1: Tensor, z_2: Tensor, eps: float = 1e-5) -> Tensor:
    """MSGAN's mode-seeking term (Mao et al., CVPR 2019, eq. 3), to be minimised.

    1 / (mean|G(c, z_1) - G(c, z_2)| / mean|z_1 - z_2| + eps): two outputs of the same condition
    under two latents should differ in proportion to their latents, so that the generator does not
    collapse them onto one mode. Each mean runs over the whole batch (every sample, channel and
    pixel; every latent entry), as the reference HelenMao/MSGAN computes it (DRIT-Mode-Seeking/
    model.py, eps 1e-5); any method with a latent input can add it.
    """
    ratio = torch.mean(torch.abs(fake_1 - fake_2)) / torch.mean(torch.abs(z_1 - z_2))
    return 1.0 / (ratio + eps)
