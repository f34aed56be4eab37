"""StarGAN v2: the reference's update order, R1, the diversity schedule, exact resume, real AFHQ data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from i2ibench.metrics.content import ContentMetrics, load_lpips
from i2ibench.methods.stargan_v2 import StarGANv2, r1_penalty

from conftest import SHARED_DATASETS, inception_weights, needs_shared_data, tiny_datamodule
from test_methods_cyclegan import LossRecorder, cpu_trainer

TRAINED = ("generator", "mapping_network", "style_encoder", "discriminator")
EMA = ("generator_ema", "mapping_network_ema", "style_encoder_ema")


def tiny_stargan(**overrides) -> StarGANv2:
    settings = dict(img_size=32, base_dim=8, max_conv_dim=16, style_dim=8, latent_dim=4, num_domains=3, ds_iter=10)
    return StarGANv2(**{**settings, **overrides})


@pytest.fixture(scope="module")
def multi_root(i2ibench_home) -> Path:
    from i2ibench.data.embedded import materialize

    return materialize("builtin-multi", size=32)


def multi_datamodule(root: Path, **overrides):
    settings = dict(load_size=32, crop_size=32, mode="multi-domain", latent_dim=4, outputs_per_source=2,
                    samples_per_epoch=8, batch_size=2, eval_batch_size=4)
    return tiny_datamodule(root, **{**settings, **overrides})


def snapshot(model: StarGANv2) -> dict[str, list[torch.Tensor]]:
    return {name: [p.detach().clone() for p in getattr(model, name).parameters()] for name in TRAINED + EMA}


def changed(before: dict, model: StarGANv2) -> set[str]:
    return {name for name, params in before.items()
            if any(not torch.equal(a, b) for a, b in zip(params, getattr(model, name).parameters()))}


def test_update_order_and_what_each_step_changes(multi_root, tmp_path):
    pl.seed_everything(0)
    model = tiny_stargan()
    steps: list[tuple[str, set[str]]] = []
    original_update, original_ema = model.update, model.update_moving_averages

    def update(optimizers, loss):
        before = snapshot(model)
        original_update(optimizers, loss)
        names = {id(o.optimizer if hasattr(o, "optimizer") else o): n for o, n in zip(model.optimizers(), "DGFE")}
        steps.append(("".join(names[id(o.optimizer if hasattr(o, "optimizer") else o)] for o in optimizers),
                      changed(before, model)))

    def moving_averages():
        before = snapshot(model)
        original_ema()
        steps.append(("EMA", changed(before, model)))

    model.update, model.update_moving_averages = update, moving_averages
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(model, multi_datamodule(multi_root))
    assert steps == [
        ("D", {"discriminator"}),                                    # latent-guided fakes
        ("D", {"discriminator"}),                                    # reference-guided fakes
        ("GFE", {"generator", "mapping_network", "style_encoder"}),  # latent guidance
        ("G", {"generator"}),                                        # reference guidance: the generator only
        ("EMA", set(EMA)),
    ]
    assert model.iterations == 1


def test_r1_penalty_on_a_known_case():
    """For D(x) = w . x the input gradient is w, so R1 = 0.5 |w|^2 for every sample."""
    w = torch.randn(2, 3, 4, 4)
    x = torch.randn(5, 2, 3, 4, 4, requires_grad=True)
    penalty = r1_penalty((x * w).flatten(1).sum(1), x)
    assert penalty.item() == pytest.approx(0.5 * w.pow(2).sum().item(), rel=1e-6)


def test_diversity_weight_decays_linearly_to_zero():
    model = tiny_stargan(lambda_ds=2.0, ds_iter=100)
    for iterations, expected in ((0, 2.0), (25, 1.5), (50, 1.0), (100, 0.0), (150, 0.0)):
        model.iterations = iterations
        assert model.diversity_weight() == pytest.approx(expected)


def test_face_high_pass_is_refused_without_its_landmark_network():
    from i2ibench.errors import ConfigError

    with pytest.raises(ConfigError, match="FAN"):
        tiny_stargan(w_hpf=1.0)


@pytest.mark.parametrize("overrides, data, message", [
    ({}, {"latent_dim": 16}, r"data.latent_dim .16. must equal model.init_args.latent_dim .4."),
    ({"num_domains": 2}, {}, r"model.init_args.num_domains is 2, the dataset has 3"),
])
def test_mismatched_sizes_are_refused_as_config_errors_before_training(multi_root, tmp_path, overrides, data, message):
    """ConfigError: the CLI prints one line and exits 2 (a ValueError would print a traceback)."""
    from i2ibench.errors import ConfigError

    model = tiny_stargan(**overrides)
    with pytest.raises(ConfigError, match=message):
        cpu_trainer(tmp_path, max_steps=1).fit(model, multi_datamodule(multi_root, **data))
    assert model.iterations == 0


def test_resume_restores_iterations_ema_and_optimisers_exactly(multi_root, tmp_path):
    def run(root: Path, max_epochs: int, ckpt: str | None = None, seed: int = 0):
        pl.seed_everything(seed)
        recorder = LossRecorder()
        checkpoint = ModelCheckpoint(dirpath=root / "ckpt", save_last=True, save_top_k=0, save_on_train_epoch_end=True)
        model = tiny_stargan()
        cpu_trainer(root, max_epochs=max_epochs, enable_checkpointing=True, callbacks=[recorder, checkpoint]).fit(
            model, multi_datamodule(multi_root), ckpt_path=ckpt)
        return recorder, model

    straight, straight_model = run(tmp_path / "a", 2)
    run(tmp_path / "b", 1)
    resumed, resumed_model = run(tmp_path / "b", 2, str(tmp_path / "b" / "ckpt" / "last.ckpt"), seed=7)
    assert resumed.steps == straight.steps[4:]  # 4 iterations per epoch (8 samples, batch 2)
    assert resumed_model.iterations == straight_model.iterations == 8
    for name in EMA + TRAINED:
        for a, b in zip(getattr(straight_model, name).parameters(), getattr(resumed_model, name).parameters()):
            assert torch.equal(a, b), name


def test_translate_gives_k_styles_and_diversity_is_measured(multi_root):
    datamodule = multi_datamodule(multi_root)
    datamodule.setup("fit")
    model = tiny_stargan().eval()
    for task in ("photo->sketch@latent", "cartoon->photo@reference"):
        batch = next(iter(torch.utils.data.DataLoader(datamodule.eval_dataset("test", task), batch_size=3)))
        outputs = model.translate(batch, task)
        assert outputs.shape == (3, 2, 3, 32, 32) and outputs.abs().max() <= 1
    lpips_model, description = load_lpips("alex", random_backbone=True)
    assert "RANDOM" in description  # a plumbing test, and it says so
    diversity = ContentMetrics((), lpips_model, diversity=True)
    distinct = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    same = distinct[:, :1].expand(-1, 3, -1, -1, -1)
    diversity.update(torch.tensor([0, 1]), distinct)
    diversity.update(torch.tensor([2, 3]), same)
    per_source = diversity.ordered()["lpips_diversity"]
    assert (per_source[:2] > 0).all() and torch.allclose(per_source[2:], torch.zeros(2, dtype=per_source.dtype), atol=1e-6)


@needs_shared_data
@pytest.mark.slow
@pytest.mark.skipif(inception_weights() is None, reason="no Inception weights")
def test_fit_on_the_afhq_samples_completes(tmp_path):
    """Real AFHQ images (3 domains): the reference images train, the source images test."""
    from i2ibench.metrics.callback import EvaluationCallback

    raw = SHARED_DATASETS / "afhq-samples"
    for split, folder in (("train", "ref"), ("test", "src")):
        for domain in ("cat", "dog", "wild"):
            (tmp_path / "afhq" / split / domain).mkdir(parents=True)
            for src in sorted((raw / folder / domain).iterdir()):
                os.symlink(src, tmp_path / "afhq" / split / domain / src.name)
    callback = EvaluationCallback(method="stargan-v2", weights=str(inception_weights()), lpips="random-alex",
                                  kid_subsets=5)
    trainer = cpu_trainer(tmp_path / "run", max_epochs=1, limit_val_batches=None, callbacks=[callback])
    trainer.fit(StarGANv2(img_size=32, base_dim=8, max_conv_dim=16, style_dim=8, latent_dim=4),
                multi_datamodule(tmp_path / "afhq"))
    record = json.loads(callback.records[-1].read_text())
    assert len(record["metrics"]) == 12  # 6 ordered pairs x {latent, reference}
    cat_to_dog = record["metrics"]["cat->dog@latent"]
    assert cat_to_dog["n_fake"] == 5 * 2 and cat_to_dog["n_real"] == 5
    assert cat_to_dog["fid"] > 0 and cat_to_dog["lpips_diversity"] is not None


def test_bench_sample_strips_of_a_multi_domain_model(multi_root, tmp_path):
    """The bench's test_samples step reads multi-domain items (their source is `x`, not `A`)."""
    from i2ibench.bench.run_one import save_test_samples

    datamodule = multi_datamodule(multi_root)
    datamodule.setup("test")
    save_test_samples(tiny_stargan(), datamodule, tmp_path)
    strips = sorted(p.name for p in tmp_path.iterdir())
    assert strips and any(".inputs.png" in s for s in strips) and any(".outputs.png" in s for s in strips)
