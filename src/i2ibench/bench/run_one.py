"""One bench run (method x seed on a dataset) in its own process: fit, test, samples, done marker.

`python -m i2ibench.bench.run_one <LightningCLI arguments>`; the bench runner builds the
arguments. One process per run keeps one W&B run per bench run, frees all memory between runs,
and lets Lightning relaunch the same command for every DDP rank. An interrupted run continues
from its `last.ckpt`; a finished one leaves `done.json`, and the runner skips it next time.

A run that cannot go on (a non-finite loss, bad input) leaves `failed.json` instead: the reason,
written atomically, which the runner puts in the result table. It then ends like `i2ibench fit`:
one line `i2ibench: error: <reason>` last on stderr, exit status 1 (non-finite loss) or 2 (bad
input). Any other exception is recorded too, then raised with its traceback (a bug to report).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from i2ibench import files
from i2ibench.cli import build_cli
from i2ibench.data.tasks import parse_task
from i2ibench.errors import EXIT_USER_ERROR, NonFiniteLossError, UserError, verbose_requested
from i2ibench.methods.base import to_pil
from i2ibench.metrics.callback import EvaluationCallback

DONE = "done.json"
FAILED = "failed.json"
EXIT_TRAINING_FAILED = 1
SAMPLES_PER_TASK, MAX_SAMPLE_TASKS = 4, 4


def main(argv: list[str]) -> int:
    """One run; its failure reason, if any, goes to `<run folder>/failed.json` (see the module docstring)."""
    root = run_root(argv)
    try:
        return train_and_test(argv)
    except (NonFiniteLossError, UserError) as err:
        if verbose_requested(argv):
            traceback.print_exc()
        record_failure(root, err)
        finish_wandb()  # W&B prints its closing lines at exit otherwise, after ours
        sys.stdout.flush()
        print(f"i2ibench: error: {str(err).strip()}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR if isinstance(err, UserError) else EXIT_TRAINING_FAILED
    except Exception as err:
        record_failure(root, err)
        raise


def run_root(argv: list[str]) -> Path | None:
    """The run folder the runner passes as `--trainer.default_root_dir` (None if absent)."""
    for i, arg in enumerate(argv):
        if arg == "--trainer.default_root_dir" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--trainer.default_root_dir="):
            return Path(arg.split("=", 1)[1])
    return None


def record_failure(root: Path | None, err: BaseException) -> None:
    """`failed.json`: why the run stopped, for the result table (each DDP process that fails may write it)."""
    if root is None:
        return
    reason = " ".join(str(err).split()) or type(err).__name__
    if not isinstance(err, (NonFiniteLossError, UserError)):
        reason = f"{type(err).__name__}: {reason}"
    files.write_json(Path(root) / FAILED, {"reason": reason, "error": type(err).__name__})


def finish_wandb() -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=EXIT_TRAINING_FAILED, quiet=True)


def train_and_test(argv: list[str]) -> int:
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
