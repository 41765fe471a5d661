from __future__ import annotations

import logging
import sys

import pytest

from flows.runner import UserErrorsWithoutTraceback, run_flow
from tasks.platform.errors import DataQualityError


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


BAD_OVERRIDE_IN_A_FRESH_PROCESS = """
import sys
from flows.bookcovers import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    heavy = sorted(m for m in ("prefect", "torch", "mlflow", "sklearn") if m in sys.modules)
    print(exit.code, ",".join(heavy) or "none")
"""


@pytest.mark.parametrize("argv, expected", [
    (["run", "clip.epochs=abc"], "error: override clip.epochs=abc: clip.epochs: Input should be a valid integer"),
    (["stage", "finetune_clip", "clip.epoch=3"], "error: override clip.epoch=3: unknown key clip.epoch; did you mean clip.epochs?"),
    (["run", "classifier.nosuch=1"], "error: override classifier.nosuch=1: unknown key classifier.nosuch; valid keys of classifier: candidates,"),
    (["--params", "no-such-params.yaml", "run"], "error: params file no-such-params.yaml does not exist"),
])
def test_a_bad_param_answers_before_the_heavy_imports_and_names_its_source(argv: list[str], expected: str, tmp_path) -> None:
    """The ~1 s answer (instead of ~20 s) comes from never importing Prefect, torch or MLflow before the check."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    done = subprocess.run([sys.executable, "-c", BAD_OVERRIDE_IN_A_FRESH_PROCESS, *argv], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert done.stdout.split() == ["2", "none"], done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(expected), done.stderr


def test_a_value_from_the_params_file_is_blamed_on_the_file(tmp_path) -> None:
    from tasks.platform.settings import SettingsError, load_settings

    (tmp_path / "params.yaml").write_text("clip:\n  epochs: abc\n")
    with pytest.raises(SettingsError, match=r"^.*params.yaml: clip.epochs: Input should be a valid integer"):
        load_settings(tmp_path / "params.yaml", ["clip.batch_size=8"])
