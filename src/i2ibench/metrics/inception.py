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


class InceptionExtractor:
    """pool3 features and logits of 8-bit images, from one Inception forward per image."""

    def __init__(self, weights: str | Path | None = None, device: torch.device | str = "cpu") -> None:
        self.model, self.weights = load_inception(weights)
        self.model.eval().requires_grad_(False)
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
            features, logits = self.model(images_uint8.to(self.device))
        return features.float().cpu(), logits.float().cpu()

    def card(self) -> dict:
        return {"feature_extractor": EXTRACTOR_NAME, "weights_file": self.weights.path.name,
                "weights_sha256": self.weights.sha256,
                "resize": "TF1-compatible bilinear to 299x299 inside the extractor (torch-fidelity)",
                "input_quantization": "8-bit, as when images are saved to PNG"}
