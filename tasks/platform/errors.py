"""The errors a user can fix: each message names the file or param and what to do.

The command line (flows/runner.py) ends on any of these with that one message and exit status 2,
never a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Base of the errors whose message is the whole story."""


class InputFileError(UserError, ValueError):
    """A whole input file is unusable, or a stage's input has not been produced yet."""


class DataQualityError(UserError, RuntimeError):
    """The data cannot give a trustworthy model: too much quarantined, too few rows, no signal."""


class ModelLoadError(UserError, RuntimeError):
    """A configured or registered model could not be loaded."""


def require_inputs(stage: str, *paths: Path) -> None:
    """Fail with the stage to run first, instead of a FileNotFoundError deep inside pandas or torch."""
    missing = [str(path) for path in paths if not Path(path).exists()]
    if missing:
        raise InputFileError(f"{stage}: input(s) {missing} not found; run the earlier stages first "
                             "(`make run`, `dvc repro`, or `python -m flows.pipeline`)")
