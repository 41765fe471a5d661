from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PROJECT_ROOT

from tasks.platform.settings import Settings, SettingsError, load_settings


def test_params_yaml_matches_the_typed_defaults() -> None:
    """params.yaml documents every knob; the code's defaults must not drift from it."""
    assert load_settings(PROJECT_ROOT / "params.yaml") == Settings()


def test_overrides_are_typed_like_the_field(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "params.yaml", ["clip.epochs=2", "data.root=../shared/data", "clip.small.layers=3"])
    assert settings.clip.epochs == 2
    assert settings.data.root == Path("../shared/data")
    assert settings.clip.small.layers == 3


def test_unknown_key_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="clip.epoch"):
        load_settings(tmp_path / "params.yaml", ["clip.epoch=2"])


def test_override_without_equals_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="section.key=value"):
        load_settings(tmp_path / "params.yaml", ["clip.epochs"])


def test_out_of_range_value_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="max_quarantine_fraction"):
        load_settings(tmp_path / "params.yaml", ["validate.max_quarantine_fraction=1.5"])


def test_caption_template_with_unknown_field_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="caption_template"):
        load_settings(tmp_path / "params.yaml", ["labeling.caption_template={title} ({year})"])


def test_params_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("- just\n- a list\n")
    with pytest.raises(SettingsError, match="mapping"):
        load_settings(params)


@pytest.mark.parametrize("override, message", [
    ("classifier.candidates=[naive_bayes, xgboost]", "candidates"),
    ("classifier.candidates=[]", "candidates"),
    ("evaluate.select_metric=text_to_image_R@3", "select_metric"),
    ("evaluate.zero_shot_template=a {genre} cover", "zero_shot_template"),
    ("clip.small.heads=3", "multiple of heads"),
])
def test_settings_that_would_fail_late_fail_at_load(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(tmp_path / "params.yaml", [override])


def test_a_params_file_named_on_purpose_must_exist(tmp_path: Path) -> None:
    """Only params.yaml may be absent (all defaults); another name that does not exist is a typo."""
    with pytest.raises(SettingsError, match="params file .*typo.yaml does not exist"):
        load_settings(tmp_path / "typo.yaml")
