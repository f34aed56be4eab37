"""The evaluation's fast path gives the numbers of the plain path (issue 18).

The fast Inception forward (BatchNorms folded, channels_last, a cheaper TF1 resize) must give
torch-fidelity's features on real photographs and sketches; KID from the whole-set kernel matrix
must give torch-fidelity's `kid_features_to_metric`; decoding one batch ahead in a thread must
give the batches in order and pass errors on.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torch_fidelity.metric_kid import kid_features_to_metric

from conftest import SHARED_DATASETS
from i2ibench.metrics import distribution as D
from i2ibench.metrics.folder_eval import prefetched
from i2ibench.metrics.inception import WEIGHTS_ENV, InceptionExtractor, resize_like_tf1

CUFS = SHARED_DATASETS / "cufs-student" / "CUHK_student_test"


def cufs_uint8(count: int) -> torch.Tensor:
    """`count` real CUFS images (photos and sketches, 200 x 250 px: not square, not a divisor of 299)."""
    if not CUFS.is_dir():
        pytest.skip(f"{CUFS} is not here")
    paths = sorted((CUFS / "photos").iterdir())[: count // 2] + sorted((CUFS / "sketches").iterdir())[: count - count // 2]
    arrays = [np.array(Image.open(p).convert("RGB")) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def test_resize_is_bit_identical_to_torch_fidelitys():
    images = cufs_uint8(4).float()
    theirs = interpolate_bilinear_2d_like_tensorflow1x(images, size=(299, 299), align_corners=False)
    assert torch.equal(resize_like_tf1(images), theirs)
    small = images[:, :, :37, :53]  # upsampling by other factors in each direction
    assert torch.equal(resize_like_tf1(small),
                       interpolate_bilinear_2d_like_tensorflow1x(small, size=(299, 299), align_corners=False))


@pytest.mark.slow
def test_fast_features_equal_torch_fidelitys_forward(monkeypatch):
    """Fast path vs torch-fidelity's own forward (`fast=False`), real Inception weights, real images."""
    weights = SHARED_DATASETS.parent / "weights" / "inception-2015-12-05-pool3-noclassifier.pth"
    if not weights.is_file():
        pytest.skip(f"{weights} is not here")
    monkeypatch.setenv(WEIGHTS_ENV, str(weights))
    images = cufs_uint8(6)
    plain = InceptionExtractor(fast=False)
    fast = InceptionExtractor()
    reference, reference_logits = plain(images)
    features, logits = fast(images)
    assert features.shape == (6, 2048) and features.is_contiguous()
    scale = float(reference.abs().max())
    assert float((features - reference).abs().max()) <= 1e-5 * scale
    # per image too: every image's feature vector, not only the largest values
    per_image = (features - reference).norm(dim=1) / reference.norm(dim=1)
    assert float(per_image.max()) <= 1e-5
    assert torch.allclose(logits, reference_logits, rtol=1e-5, atol=1e-5 * float(reference_logits.abs().max()))
    # batch of one: the fast path does not depend on the batch either
    single = fast(images[2:3])[0]
    assert float((single - reference[2:3]).abs().max()) <= 1e-5 * scale


def kid_reference(real: torch.Tensor, fake: torch.Tensor, subset: int, subsets: int) -> tuple[float, float]:
    theirs = kid_features_to_metric(fake.double(), real.double(), kid_subsets=subsets, kid_subset_size=subset,
                                    verbose=False)  # input1 = fake, as torch-fidelity's command line takes it
    return theirs["kernel_inception_distance_mean"], theirs["kernel_inception_distance_std"]


@pytest.mark.parametrize("n_real, n_fake, subset, subsets", [
    (100, 100, 100, 10),  # i2ibench eval's default on 100 + 100 images: subsets are permutations of the sets
    (150, 100, 100, 10),  # the larger set subsampled
    (120, 90, 60, 12),    # both sets subsampled, different sizes
])
def test_kid_from_the_whole_kernel_matrix_is_torch_fidelitys(monkeypatch, n_real, n_fake, subset, subsets):
    """Pool3-like features (non-negative, 2048-d); the whole-matrix path and the per-subset path both
    equal torch-fidelity's float64 KID to 1e-10."""
    generator = torch.Generator().manual_seed(n_real + n_fake)
    real = torch.rand(n_real, 2048, generator=generator).square()
    fake = torch.rand(n_fake, 2048, generator=generator).square() * 1.1 + 0.02
    mean, std = kid_reference(real, fake, subset, subsets)
    assert (n_real + n_fake) ** 2 <= 3 * subsets * subset**2  # the whole-matrix path is taken
    whole = D.kernel_inception_distance(real, fake, subset, subsets)
    monkeypatch.setattr(D, "GRAM_MAX_ROWS", 0)  # force one kernel computation per subset
    per_subset = D.kernel_inception_distance(real, fake, subset, subsets)
    for ours in (whole, per_subset):
        assert ours[0] == pytest.approx(mean, rel=1e-10)
        assert ours[1] == pytest.approx(std, rel=1e-10, abs=1e-12 * abs(mean))
    if max(n_real, n_fake) > subset:
        assert std > 1e-3 * abs(mean)  # the subsets really differ


def test_prefetched_keeps_order_and_passes_errors_on():
    assert list(prefetched(iter(range(7)))) == list(range(7))

    def failing():
        yield 1
        raise OSError("truncated file")

    got = []
    with pytest.raises(OSError, match="truncated"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1]
    # a consumer that stops early does not leave the producer blocked
    stream = prefetched(iter(range(100)))
    assert next(stream) == 0
    stream.close()
