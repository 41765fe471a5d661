from __future__ import annotations

import logging
import sys

import pytest

from flows.runner import UserErrorsWithoutTraceback, run_flow
from tasks.inputs.validation import DataQualityError


def never_called(**_: object) -> None:
    raise AssertionError("the flow must not start when params are wrong")


def test_bad_param_exits_2_with_one_line_and_no_flow_run(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    with pytest.raises(SystemExit) as exited:
        run_flow(never_called, ["--params", str(tmp_path / "params.yaml"), "clip.epoch=3"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "clip.epoch" in err and "\n" not in err


def record_with(error: BaseException) -> logging.LogRecord:
    try:
        raise error
    except BaseException:
        return logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())


def test_user_errors_lose_their_traceback_other_errors_keep_it() -> None:
    user = record_with(DataQualityError("too much quarantined"))
    bug = record_with(ZeroDivisionError("a real bug"))
    keep = UserErrorsWithoutTraceback()
    assert keep.filter(user) and keep.filter(bug)
    assert user.exc_info is None
    assert bug.exc_info is not None


def test_a_stage_run_before_its_inputs_exist_names_the_missing_file(tmp_path) -> None:
    from tasks.platform.errors import InputFileError, require_inputs

    with pytest.raises(InputFileError, match=r"label_covers: input\(s\) .*covers.parquet.* run the earlier stages"):
        require_inputs("label_covers", tmp_path / "covers.parquet")
