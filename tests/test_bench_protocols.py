"""The bench protocols (configs/bench/*.yaml): every method entry parses, and its schedule is whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from i2ibench.bench.reference_rows import parse_run
from i2ibench.bench.runner import Run, load_protocol, run_arguments
from i2ibench.data import catalog
from i2ibench.data.folders import detect_layout
from i2ibench.registry import METHODS, load_all

load_all()
QUICK = load_protocol("quick")


@pytest.mark.parametrize("method", sorted(QUICK["methods"]))
def test_every_quick_entry_parses_and_its_lr_schedule_spans_the_run(method, i2ibench_home):
    spec = METHODS.get(method)
    layout = detect_layout(catalog.resolve("builtin"))
    config = parse_run(run_arguments(Run(method, spec, 0, Path("unused")), "builtin", QUICK, layout, []))
    model, trainer = config.model.init_args, config.trainer
    assert config.data.crop_size == QUICK["image_size"]
    if "n_epochs" in model:  # epoch-scheduled: the decay ends exactly at the last epoch
        assert model.n_epochs + model.n_epochs_decay == trainer.max_epochs
    if method == "stargan-v2":  # iteration-scheduled: the diversity weight reaches 0 at the last iteration
        iterations = trainer.max_epochs * config.data.samples_per_epoch // config.data.batch_size
        assert model.ds_iter == iterations == 1000


def test_the_quick_default_set_names_configured_methods_only():
    assert set(QUICK["default_methods"]) <= set(QUICK["methods"])
    assert len(QUICK["default_methods"]) == len(set(QUICK["default_methods"]))
