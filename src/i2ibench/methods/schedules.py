"""Learning-rate schedules as LambdaLR factors, stepped once per epoch."""

from __future__ import annotations

from typing import Callable


def linear_decay(n_epochs: int, n_epochs_decay: int) -> Callable[[int], float]:
    """Constant for `n_epochs`, then linearly towards zero over `n_epochs_decay` (Zhu et al. 2017, sec. 4).

    Factor during 0-based epoch e: 1 - max(0, e + 1 - n_epochs) / (n_epochs_decay + 1), the rule of
    the reference's `get_scheduler('linear')` with the scheduler stepped at the end of each epoch
    (100 epochs at 2e-4, then 1.98e-4, ..., 1.98e-6 in the 200th). A later reference revision
    steps it at the start of each epoch, which shifts the decay one epoch earlier and trains the
    last epoch at lr 0; we follow the paper's "same learning rate for the first 100 epochs".
    """

    def factor(epoch: int) -> float:
        return max(0.0, 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1))

    return factor
