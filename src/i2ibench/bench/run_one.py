"""One bench run (method x seed on a dataset) in its own process: fit, test, samples, done marker.

`python -m i2ibench.bench.run_one <LightningCLI arguments>`; the bench runner builds the
arguments. One process per run keeps one W&B run per bench run, frees all memory between runs,
and lets Lightning relaunch the same command for every DDP rank. An interrupted run continues
from its `last.ckpt`; a finished one leaves `done.json`, and the runner skips it next time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from i2ibench import files
from i2ibench.cli import build_cli
from i2ibench.data.tasks import parse_task
from i2ibench.methods.base import to_pil
from i2ibench.metrics.callback import EvaluationCallback

DONE = "done.json"
SAMPLES_PER_TASK, MAX_SAMPLE_TASKS = 4, 4


def main(argv: list[str]) -> int:
    cli = build_cli(argv, run=False)
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    root = Path(trainer.default_root_dir)
    last = root / "checkpoints" / "last.ckpt"
    trainer.fit(model, datamodule, ckpt_path=str(last) if last.is_file() else None)

    evaluation = next(cb for cb in trainer.callbacks if isinstance(cb, EvaluationCallback))
    checkpoints = {"last": str(last)}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if datamodule.eval_split == "val" and best and Path(best).is_file():
        checkpoints["best-on-validation"] = best  # chosen on val; the test split is never used to choose
    records = {}
    for selection, path in checkpoints.items():
        if selection != "last" and same_weights(path, checkpoints["last"]) and records.get("last"):
            records[selection] = relabel(records["last"], selection, path) if trainer.is_global_zero else None
            continue  # the best checkpoint is the last one: same numbers, no second evaluation
        evaluation.checkpoint_selection = selection
        trainer.test(model, datamodule, ckpt_path=path)
        records[selection] = str(evaluation.records[-1]) if evaluation.records else None
    if trainer.is_global_zero:
        model.load_state_dict(torch.load(last, map_location=model.device, weights_only=False)["state_dict"])
        save_test_samples(model, datamodule, root / "test_samples")
        files.write_json(root / DONE, {"records": records, "checkpoints": checkpoints})
    return 0


def same_weights(path_a: str, path_b: str) -> bool:
    """Two checkpoints of one run hold the same weights when they were saved at the same step."""
    steps = [torch.load(p, map_location="cpu", weights_only=False)["global_step"] for p in (path_a, path_b)]
    return steps[0] == steps[1]


def relabel(record_path: str, selection: str, checkpoint: str) -> str:
    """A copy of an evaluation record for another selection of the same checkpoint."""
    record = json.loads(Path(record_path).read_text())
    record["checkpoint"] = {"selection": selection, "path": checkpoint, "same_as": "last"}
    path = Path(record_path).with_name(Path(record_path).name.replace("-last-", f"-{selection}-"))
    files.write_json(path, record)
    return str(path)


@torch.no_grad()
def save_test_samples(model, datamodule, folder: Path) -> None:
    """For the first tasks: a strip of the first test inputs and one of their translations."""
    model.eval()
    for task in model.eval_tasks(datamodule.domains)[:MAX_SAMPLE_TASKS]:
        dataset = datamodule.eval_dataset("test", task)
        batch = next(iter(DataLoader(dataset, batch_size=min(SAMPLES_PER_TASK, len(dataset)))))
        batch = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        outputs = model.translate(batch, task)
        safe = task.replace("->", "_to_").replace("@", "_")
        spec = parse_task(task)
        sources = batch["x"] if spec.mode else batch[spec.source]  # multi-domain items name their source x
        for kind, images in (("inputs", sources), ("outputs", outputs)):
            images = images.flatten(0, -4)  # B x K x C x H x W (K styles per source) -> one row
            strip = torch.cat(list(images.clamp(-1, 1).mul(0.5).add(0.5).cpu()), dim=2)
            files.save_image(folder / f"{safe}.{kind}.png", to_pil(strip))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
