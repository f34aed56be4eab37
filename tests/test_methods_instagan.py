"""Mask models and mask data: alignment, context loss, sequential passes, bad masks, background metrics."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from i2ibench.data.images import DataError
from i2ibench.data.transforms import TrainTransform
from i2ibench.methods.instagan import InstaGAN, MaskCycleGAN, context_loss
from i2ibench.metrics.content import background_metrics
from skimage.metrics import peak_signal_noise_ratio

from conftest import SHARED_DATASETS, inception_weights, needs_shared_data, tiny_datamodule
from test_methods_cyclegan import LossRecorder, cpu_trainer


@pytest.fixture(scope="module")
def masks_root(i2ibench_home) -> Path:
    from i2ibench.data.embedded import materialize

    return materialize("builtin-masks", size=32)


def mask_datamodule(root: Path, **overrides):
    return tiny_datamodule(root, **{"mode": "mask", "batch_size": 2, **overrides})


def tiny_instagan(**overrides) -> InstaGAN:
    return InstaGAN(**{"ngf": 8, "ndf": 8, "n_blocks": 1, "n_epochs": 1, "n_epochs_decay": 1, **overrides})


def test_a_mask_drawn_from_the_image_stays_on_it_after_augmentation():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 120, (90, 110, 3), dtype=np.uint8)  # dark texture ...
    image[20:50, 30:80] = (255, 0, 0)                            # ... with a pure red object
    mask = Image.fromarray(((image[..., 0] == 255) & (image[..., 1] == 0)).astype(np.uint8) * 255)
    transform = TrainTransform(load_size=72, crop_size=64)
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        aug = transform.sample((110, 90), generator)
        out_image = transform.image(Image.fromarray(image), aug)
        out_mask = transform.mask(mask, aug)[0].bool()
        red = (out_image[0] > 0.8) & (out_image[1] < -0.6)
        overlap = (red & out_mask).sum() / (red | out_mask).sum()
        assert overlap > 0.85, (aug, float(overlap))


def test_context_loss_is_zero_when_only_masked_pixels_change():
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    masks = -torch.ones(2, 2, 16, 16)
    masks[:, 0, 4:9, 4:9] = 1
    changed = image.clone()
    changed[:, :, 4:9, 4:9] = 0.3  # inside the input mask only
    assert context_loss(image, changed, masks, masks).item() == 0.0
    changed[:, :, 0, 0] += 0.5  # one background pixel
    assert context_loss(image, changed, masks, masks).item() > 0.0


def test_each_sequential_pass_steps_the_generators_and_the_discriminators(masks_root, tmp_path):
    pl.seed_everything(0)
    model = tiny_instagan()
    counts = {"G": 0, "D": 0}
    recorder = LossRecorder()
    datamodule = mask_datamodule(masks_root, max_instances=4, batch_size=1)

    class StepCounter(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            opt_g, opt_d = pl_module.optimizers()
            for name, opt in (("G", opt_g), ("D", opt_d)):
                original = opt.optimizer.step
                opt.optimizer.step = lambda *a, _o=original, _n=name, **k: (counts.__setitem__(_n, counts[_n] + 1),
                                                                         _o(*a, **k))[1]
            self.instances = int(batch["A_count"].max().item()), int(batch["B_count"].max().item())

    counter = StepCounter()
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[counter, recorder]).fit(model, datamodule)
    passes = max(-(-n // 2) for n in counter.instances)  # ceil(instances / ins_per) in the busier domain
    assert passes >= 1 and counts == {"G": passes, "D": passes}
    losses = recorder.steps[-1]
    assert {"train/gen_ctx_A", "train/gen_cycle_A", "train/gen_idt_B2A", "train/disc_B"} <= set(losses)


def test_instagan_trains_under_bf16_autocast(masks_root, tmp_path):
    """Autocast makes the decoders return bf16; the passes write them back into float32 state."""
    pl.seed_everything(0)
    recorder = LossRecorder()
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, precision="bf16-mixed",
                          deterministic=False, callbacks=[recorder])
    trainer.fit(tiny_instagan(), mask_datamodule(masks_root, max_instances=4, batch_size=1))
    assert recorder.steps and all(np.isfinite(v) for step in recorder.steps for v in step.values())


def write_mask_set(root: Path, masks: dict[str, list[np.ndarray]], image_size=(24, 24)) -> Path:
    for split in ("train", "test"):
        for domain in "AB":
            (root / f"{split}{domain}").mkdir(parents=True)
            (root / f"{split}{domain}_seg").mkdir(parents=True)
            for stem in ("one", "two"):
                Image.new("RGB", image_size, (90, 40, 200)).save(root / f"{split}{domain}" / f"{stem}.png")
    for name, arrays in masks.items():
        for k, array in enumerate(arrays):
            Image.fromarray(array).save(root / "trainA_seg" / f"{name}_{k}.png")
    return root


def square(size=24, lo=4, hi=12, value=255) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[lo:hi, lo:hi] = value
    return mask


def test_mask_problems_are_handled_as_documented_and_said_once(tmp_path, caplog):
    soft = square()
    soft[12, 4:12] = 100  # an antialiased edge: not binary
    root = write_mask_set(tmp_path / "set", {
        "one": [square(lo=2, hi=6), square(lo=2, hi=22), np.zeros((24, 24), np.uint8), soft, square(lo=10, hi=14),
                square(lo=15, hi=23)],  # six instances, one of them empty
        # "two" has no mask file at all
    })
    datamodule = mask_datamodule(root, load_size=24, crop_size=24, max_instances=4)
    with caplog.at_level(logging.WARNING):
        datamodule.setup("fit")
    note = " ".join(r.getMessage() for r in caplog.records if "trainA_seg" in r.getMessage())
    assert "1 masks with no foreground, dropped" in note
    assert "1 masks with values other than 0/255" in note
    assert "1 images with more than 4 instances (the largest kept)" in note
    assert "1 images with no instance mask" in note
    kept = datamodule.masks[root / "trainA" / "one.png"]
    assert [p.name for p in kept] == ["one_1.png", "one_3.png", "one_5.png", "one_0.png"]  # by area; ties keep file order


def test_a_mask_of_another_size_is_an_error_naming_it(tmp_path):
    root = write_mask_set(tmp_path / "set", {"one": [square(size=30)]})
    with pytest.raises(DataError) as err:
        mask_datamodule(root, load_size=24, crop_size=24).setup("fit")
    assert "one_0.png" in str(err.value) and "must align" in str(err.value)


def test_background_psnr_equals_scikit_image_on_the_background_pixels():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(0, 256, (1, 3, 20, 20)).astype(np.float32)) / 127.5 - 1
    y = (x + torch.from_numpy(rng.normal(0, 0.1, x.shape).astype(np.float32))).clamp(-1, 1)
    masks = torch.zeros(1, 1, 20, 20)
    masks[..., 5:12, 3:15] = 1
    values = background_metrics(y, x, masks, lpips_model=None)
    keep = ~masks[0, 0].bool().numpy()
    to_np = lambda t: np.round((t[0].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.float64) / 255  # noqa: E731
    reference = peak_signal_noise_ratio(to_np(x)[keep], to_np(y)[keep], data_range=1.0)
    assert float(values["psnr_background"][0]) == pytest.approx(reference, rel=1e-9)


def test_mask_cyclegan_keeps_the_background_exactly(masks_root, tmp_path):
    model = MaskCycleGAN(generator_args={"ngf": 8, "n_blocks": 1}, discriminator_args={"ndf": 8, "spectral_norm": True},
                         n_epochs=1, n_epochs_decay=1)
    recorder = LossRecorder()
    datamodule = mask_datamodule(masks_root)
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[recorder]).fit(model, datamodule)
    assert {"train/gen_background_A2B", "train/gen_background_B2A"} <= set(recorder.steps[0])
    batch = next(iter(datamodule.test_dataloader()[0]))
    fake = model.translate(batch, "A2B")
    outside = batch["A_masks"].amax(1, keepdim=True).expand_as(fake) == 0
    assert torch.equal(fake[outside], batch["A"][outside])


@needs_shared_data
@pytest.mark.slow
@pytest.mark.skipif(inception_weights() is None, reason="no Inception weights")
@pytest.mark.parametrize("method", ["instagan", "mask-cyclegan"])
def test_fit_on_the_instagan_samples_completes(method, tmp_path):
    """Real MHP images (pants -> skirts) with their instance masks, linked into the suite's layout."""
    from i2ibench.metrics.callback import EvaluationCallback

    raw = SHARED_DATASETS / "instagan-samples" / "pants2skirt_mhp"
    for split in ("train", "test"):
        for domain in "AB":
            for kind in ("", "_seg"):
                target = tmp_path / "data" / f"{split}{domain}{kind}"
                target.mkdir(parents=True)
                for src in sorted((raw / f"sample{domain}{kind}").iterdir()):
                    os.symlink(src, target / src.name)
    callback = EvaluationCallback(method=method, weights=str(inception_weights()), lpips="random-alex", kid_subsets=5)
    model = tiny_instagan() if method == "instagan" else MaskCycleGAN(
        generator_args={"ngf": 8, "n_blocks": 1}, discriminator_args={"ndf": 8, "spectral_norm": True},
        n_epochs=1, n_epochs_decay=1)
    cpu_trainer(tmp_path / "run", max_epochs=1, limit_val_batches=None, callbacks=[callback]).fit(
        model, mask_datamodule(tmp_path / "data", load_size=36, crop_size=32, batch_size=1))
    record = json.loads(callback.records[-1].read_text())
    for task in ("A2B", "B2A"):
        metrics = record["metrics"][task]
        assert metrics["n_fake"] == 5 and metrics["fid"] > 0
        assert metrics["ssim_background"] is not None and metrics["psnr_background"] is not None


def test_a_run_longer_than_the_lr_schedule_is_refused_before_training(masks_root, tmp_path):
    """As the CycleGAN family: after n_epochs + n_epochs_decay the rate would be 0 (a silent waste)."""
    from i2ibench.errors import ConfigError

    model = tiny_instagan()  # 1 + 1 epochs
    with pytest.raises(ConfigError, match=r"trainer.max_epochs \(3\) exceeds the schedule"):
        cpu_trainer(tmp_path, max_epochs=3, limit_train_batches=1).fit(model, mask_datamodule(masks_root))
