"""Errors a user can fix, and how the command line reports them.

Every error caused by input (a bad option, a bad file, missing weights) derives from
`UserError`: the command prints its message as one line naming the option or file and the fix,
and exits with status 2, without a traceback. `--verbose` (or `I2IBENCH_VERBOSE=1`) shows the
traceback as well, for bug reports.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input: the message names the option or file and says what to do."""


class ConfigError(UserError, ValueError):
    """An option value that cannot work (negative crop size, batch size 0, ...)."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the step and the loss term."""


def verbose_requested(argv: list[str]) -> bool:
    return "--verbose" in argv or os.environ.get("I2IBENCH_VERBOSE", "") not in ("", "0")


def report_user_errors(run: Callable[[list[str]], int], argv: list[str], prog: str = "i2ibench") -> int:
    """Run `run(argv)`; a `UserError` becomes one line on stderr and exit status 2."""
    verbose = verbose_requested(argv)
    argv = [a for a in argv if a != "--verbose"]
    try:
        return run(argv)
    except UserError as err:
        if verbose:
            traceback.print_exc()
        # DataError lists every bad file on its own line; the first line says what is wrong.
        print(f"{prog}: error: {str(err).strip()}", file=sys.stderr)
        return EXIT_USER_ERROR
