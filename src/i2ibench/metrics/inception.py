"""The feature extractor of every distribution metric: torch-fidelity's TF-FID InceptionV3.

One forward gives both the 2048-d pool3 features (FID, KID, kernel MMD, precision/recall) and
the 1008-class logits (IS). Weights are resolved in this order: an explicit path, the
environment variable I2IBENCH_INCEPTION_WEIGHTS, then the official torch-fidelity file
(downloaded once into torch's hub cache, where torch-fidelity itself keeps it). The weights'
sha256 goes into every result; a file whose classifier is all zeros (the converted offline
weights) gives features but no Inception Score. A file that is missing, unreadable (truncated,
corrupt) or of another layout raises `WeightsError` (a UserError naming the file and the setting)
when the network is built: the EvaluationCallback and the perceptual loss build it before the
first training step, so bad weights never cost a training run.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

from i2ibench.errors import UserError
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

WEIGHTS_ENV = "I2IBENCH_INCEPTION_WEIGHTS"
EXTRACTOR_NAME = "inception-v3-compat (TF-FID 2015-12-05, torch-fidelity)"
FEATURE_LAYERS = ("2048", "logits_unbiased")  # torch-fidelity's layers for FID/KID/PRC and for IS
IS_CLASSES = 1008  # the TF Inception's classifier outputs


class WeightsError(UserError, ValueError):
    """The Inception weights file is missing, unreadable or not an Inception state dict."""


@dataclass(frozen=True)
class InceptionWeights:
    path: Path
    sha256: str
    has_classifier: bool  # False: the classifier is all zeros, so IS cannot be computed

    @property
    def is_unavailable_reason(self) -> str | None:
        if self.has_classifier:
            return None
        return (f"the Inception weights {self.path.name} have no classifier (fc is all zeros), so the "
                "Inception Score would be meaningless; use the official torch-fidelity weights for IS")


def resolve_weights_path(path: str | Path | None = None, setting: str = "evaluation.weights") -> Path:
    """An explicit path wins, then $I2IBENCH_INCEPTION_WEIGHTS, then the official file (downloaded once).

    `setting`: the option an explicit path came from, named in the error when the file is missing.
    """
    chosen = path or os.environ.get(WEIGHTS_ENV)
    if chosen:
        chosen = Path(chosen).expanduser()
        if not chosen.is_file():
            source = f"set by {setting}" if path else f"set by ${WEIGHTS_ENV}"
            raise WeightsError(f"{chosen}: Inception weights file not found ({source}); point it at the "
                               "torch-fidelity weights file, or unset it to download the official weights.")
        return chosen
    return download_official_weights()


def download_official_weights() -> Path:
    """torch-fidelity's official weights into torch's hub cache, checked against their sha256 prefix."""
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(URL_INCEPTION_V3).name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        hash_prefix = target.stem.rsplit("-", 1)[-1]  # torch hub convention: name-<sha256 prefix>.pth
        try:
            torch.hub.download_url_to_file(URL_INCEPTION_V3, str(target), hash_prefix=hash_prefix, progress=True)
        except Exception as err:
            raise WeightsError(
                f"could not download the official Inception weights from {URL_INCEPTION_V3} ({err}). "
                f"Offline, point ${WEIGHTS_ENV} (or the `weights` setting) at a local copy, e.g. "
                "../shared/weights/inception-2015-12-05-pool3-noclassifier.pth.") from err
    return target


def _brief(err: BaseException, limit: int = 200) -> str:
    """An exception as one short line (PyTorch's load errors span many lines)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


@lru_cache(maxsize=8)
def _inspect(path: Path, size: int, mtime: float) -> InceptionWeights:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = _brief(err)
        raise WeightsError(f"{path}: not a readable PyTorch state dict, truncated or corrupt ({reason}); "
                           "download the weights again or point the setting at a good copy.") from err
    classifier = state.get("fc.weight") if isinstance(state, dict) else None
    if not isinstance(classifier, Tensor) or tuple(classifier.shape) != (1008, 2048):
        raise WeightsError(f"{path}: not a torch-fidelity InceptionV3 state dict (no 1008x2048 `fc.weight`). "
                           "Use the official weights or a converted copy in the same layout.")
    return InceptionWeights(path, digest.hexdigest(), has_classifier=bool(classifier.abs().sum() > 0))


def inspect_weights(path: Path) -> InceptionWeights:
    """sha256, and whether the file has a classifier; validates that it is an Inception state dict."""
    stat = path.stat()
    return _inspect(path.resolve(), stat.st_size, stat.st_mtime)


@contextmanager
def full_precision() -> Iterator[None]:
    """TF32 off while extracting features: metrics need float32 matmuls, not 10-bit mantissas."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] floats -> 8-bit images, exactly as writing them to PNG would quantise them."""
    return images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def load_inception(weights: str | Path | None = None,
                   setting: str = "evaluation.weights") -> tuple[FeatureExtractorInceptionV3, InceptionWeights]:
    """torch-fidelity's InceptionV3 with checked weights (resolved as above); any bad file is a WeightsError."""
    checked = inspect_weights(resolve_weights_path(weights, setting))
    try:  # strict load: a state dict with other keys or shapes is caught here
        model = FeatureExtractorInceptionV3(
            "inception-v3-compat", list(FEATURE_LAYERS), feature_extractor_weights_path=str(checked.path))
    except Exception as err:
        raise WeightsError(f"{checked.path}: not a torch-fidelity InceptionV3 state dict ({_brief(err)}); use the "
                           "official weights or a converted copy with the same keys and shapes.") from err
    return model, checked


# torch-fidelity's layers between the 299 px input and pool3, in its forward's order
BODY_LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
               "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
               "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool")
INPUT_SIZE = 299


def _tf1_grid(in_size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Source rows (low, high) and weights of TF1's bilinear resize (align_corners=False, no half-pixel
    centres), with torch-fidelity's float32 arithmetic."""
    grid = torch.arange(0, INPUT_SIZE, 1, dtype=torch.float32, device=device)
    grid = grid * torch.tensor(in_size / INPUT_SIZE, dtype=torch.float32)
    low = grid.long()
    return low, (low + 1).clamp_max(in_size - 1), grid - low.float()


def resize_like_tf1(images: Tensor) -> Tensor:
    """N x C x H x W float32 -> N x C x 299 x 299, bit-identical to torch-fidelity's TF1 bilinear resize.

    torch-fidelity gathers four 299 x 299 corner images and blends them (3 full-size blends). The
    first blend along x is the same for both source rows, so here it is done once on the H input
    rows, then rows are gathered and blended along y: the same float32 operations on the same
    operands (so the same bits), with about a third of the work.
    """
    x_low, x_high, dx = _tf1_grid(images.shape[3], images.device)
    y_low, y_high, dy = _tf1_grid(images.shape[2], images.device)
    left = images[:, :, :, x_low]
    rows = left + (images[:, :, :, x_high] - left) * dx.view(1, 1, 1, INPUT_SIZE)
    top = rows[:, :, y_low, :]
    return top + (rows[:, :, y_high, :] - top) * dy.view(1, 1, INPUT_SIZE, 1)


def fold_batch_norms(model: torch.nn.Module) -> None:
    """Fold every eval-mode BatchNorm into the convolution before it (in float64, stored float32).

    conv -> bn -> relu becomes conv(+bias) -> relu: the same function, one pass over each
    activation map fewer (BatchNorm was 7% of the forward's time on the CPU). Changes features by
    rounding only (about 1e-6 relative; tests/test_metrics_fast_path.py).
    """
    for block in model.modules():
        conv, bn = getattr(block, "conv", None), getattr(block, "bn", None)
        if not isinstance(conv, torch.nn.Conv2d) or not isinstance(bn, torch.nn.BatchNorm2d):
            continue
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
        bias = bn.bias.double() - bn.running_mean.double() * scale
        if conv.bias is not None:
            bias = bias + conv.bias.double() * scale
        conv.weight = torch.nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
        conv.bias = torch.nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
        block.bn = torch.nn.Identity()


class InceptionExtractor:
    """pool3 features and logits of 8-bit images, from one Inception forward per image.

    `fast` (the default) runs the same network faster, in float32 throughout: BatchNorms folded
    into the convolutions, channels_last activations (oneDNN's / cuDNN's preferred layout), and a
    TF1-bilinear resize that does a third of the work with the same bits. Features differ from
    torch-fidelity's own forward (`fast=False`) by rounding only, about 1e-6 relative; FID / KID
    then agree to well within 1e-4 (tests/test_metrics_fast_path.py, benchmarks/metrics_speed.py).
    """

    def __init__(self, weights: str | Path | None = None, device: torch.device | str = "cpu",
                 fast: bool = True) -> None:
        self.model, self.weights = load_inception(weights)
        self.model.eval().requires_grad_(False)
        self.fast = fast
        if fast:
            fold_batch_norms(self.model)
            self.model.to(memory_format=torch.channels_last)
        self.device = torch.device(device)
        self.model.to(self.device)

    def to(self, device: torch.device | str) -> "InceptionExtractor":
        if torch.device(device) != self.device:
            self.device = torch.device(device)
            self.model.to(self.device)
        return self

    @torch.no_grad()
    def __call__(self, images_uint8: Tensor) -> tuple[Tensor, Tensor]:
        """N x 3 x H x W uint8 (any H, W: resized to 299 inside, TF1-bilinear) -> (N x 2048, N x 1008), float32 on CPU."""
        # float32 whatever the training precision: no TF32, no bf16 autocast around the metric network.
        with full_precision(), torch.autocast(self.device.type, enabled=False):
            if self.fast:
                features, logits = self._fast_forward(images_uint8.to(self.device))
            else:
                features, logits = self.model(images_uint8.to(self.device))
        return features.float().cpu(), logits.float().cpu()

    def _fast_forward(self, images_uint8: Tensor) -> tuple[Tensor, Tensor]:
        if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4 or images_uint8.shape[1] != 3:
            raise ValueError(f"expected N x 3 x H x W uint8 images, got {images_uint8.dtype} {tuple(images_uint8.shape)}")
        x = (resize_like_tf1(images_uint8.float()) - 128) / 128  # torch-fidelity's input scaling, same bits
        x = x.contiguous(memory_format=torch.channels_last)
        for name in BODY_LAYERS:
            x = getattr(self.model, name)(x)
        features = torch.flatten(x, 1)
        return features, features.mm(self.model.fc.weight.T)  # torch-fidelity's `logits_unbiased`

    def card(self) -> dict:
        return {"feature_extractor": EXTRACTOR_NAME, "weights_file": self.weights.path.name,
                "weights_sha256": self.weights.sha256,
                "resize": "TF1-compatible bilinear to 299x299 inside the extractor (torch-fidelity)",
                "input_quantization": "8-bit, as when images are saved to PNG"}
