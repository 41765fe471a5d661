"""Build or load a transformers CLIP model with its tokenizer and preprocessing, and embed with it.

`clip.model` is a hub id (for users with internet), a local folder (a saved or downloaded CLIP,
weights optional), or `small`: a compact architecture from `CLIPConfig` with a BPE tokenizer
trained on the captions, for machines that have no pretrained weights at all. Every variant
is saved the same way (save_pretrained: safetensors + tokenizer + image processor), so the
fine-tuned folder loads back through the same local-folder path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    CLIPConfig,
    CLIPModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from tasks.clip.towers import TOWERS, is_towers_folder, load_towers, new_towers, towers_processor
from tasks.inputs.images import load_cover
from tasks.platform.errors import ModelLoadError
from tasks.platform.pretrained import hub_offline, torch_device
from tasks.platform.settings import ClipSettings, SmallClipSettings

try:  # transformers 5: the PIL backend, which needs no torchvision (torchvision is not installed here).
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:  # transformers 4
    from transformers import CLIPImageProcessor  # type: ignore[assignment]

log = logging.getLogger(__name__)

SMALL = "small"
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>", "<|unk|>", "<|pad|>")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class ClipLoadError(ModelLoadError):
    """The configured CLIP could not be loaded; the message says what to change."""


@dataclass
class ClipBundle:
    model: CLIPModel
    tokenizer: PreTrainedTokenizerBase
    processor: CLIPImageProcessor
    max_text_tokens: int
    device: torch.device

    @property
    def image_size(self) -> int:
        return crop_height(self.processor)


def crop_height(processor: CLIPImageProcessor) -> int:
    crop = processor.crop_size
    return int(crop["height"] if isinstance(crop, dict) else getattr(crop, "height", crop))


def pick_device(requested: str) -> torch.device:
    return torch.device(torch_device(requested, "clip.device", ClipLoadError))


def train_tokenizer(captions: list[str], small: SmallClipSettings) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer learned from the training captions (no hub download needed)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=small.vocab_size, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(captions, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=SPECIAL_TOKENS[0], eos_token=SPECIAL_TOKENS[1],
        unk_token=SPECIAL_TOKENS[2], pad_token=SPECIAL_TOKENS[3], model_max_length=small.max_text_tokens,
    )


def small_config(small: SmallClipSettings, vocab_size: int) -> CLIPConfig:
    shared = {"hidden_size": small.hidden_size, "intermediate_size": 4 * small.hidden_size,
              "num_hidden_layers": small.layers, "num_attention_heads": small.heads}
    return CLIPConfig(
        text_config={**shared, "vocab_size": vocab_size, "max_position_embeddings": small.max_text_tokens,
                     "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 3},
        vision_config={**shared, "image_size": small.image_size, "patch_size": small.patch_size},
        projection_dim=small.projection_dim,
    )


def small_processor(small: SmallClipSettings) -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": small.image_size},
                              crop_size={"height": small.image_size, "width": small.image_size})


def has_weights(source: str) -> bool:
    folder = Path(source)
    return folder.is_dir() and any((folder / name).exists() for name in WEIGHT_FILES)


def _load_tokenizer(source: str, offline: bool) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
    # transformers 5 can return an empty tokenizer offline instead of raising: check what came back.
    if len(tokenizer.get_vocab()) <= len(SPECIAL_TOKENS):
        raise ClipLoadError(f"tokenizer of {source!r} loaded empty; give clip.model a folder with "
                            "tokenizer.json/vocab.json, or run with HF_HUB_OFFLINE=0 to download it")
    return tokenizer


def _random_init(config: CLIPConfig, seed: int) -> CLIPModel:
    """Deterministic random weights, so evaluation can rebuild the exact 'before' model."""
    torch.manual_seed(seed)
    return CLIPModel(config)


def _check_reachable(source: str, offline: bool) -> None:
    if not Path(source).is_dir() and (offline or source.startswith((".", "/"))):
        raise ClipLoadError(f"clip.model={source!r} is not a local folder and the hub is offline; use clip.model=small, "
                            "a folder holding a saved CLIP, or run with HF_HUB_OFFLINE=0 on a machine with internet")


def clip_image_size(cfg: ClipSettings) -> int:
    """The side, in pixels, of the square covers the configured CLIP takes (read from its processor, no weights loaded)."""
    if cfg.model == SMALL:
        return cfg.small.image_size
    if cfg.model == TOWERS:
        return cfg.towers.image_size
    offline = hub_offline()
    _check_reachable(cfg.model, offline)
    try:
        return crop_height(CLIPImageProcessor.from_pretrained(cfg.model, local_files_only=offline))
    except OSError as error:
        raise ClipLoadError(f"could not load the image processor of {cfg.model!r}: {error}") from error


def load_source(source: str, cfg: ClipSettings, offline: bool, seed: int, device: torch.device) -> ClipBundle:
    """A CLIP from a local folder or hub id; a folder without weights gives the architecture, randomly initialised."""
    is_folder = Path(source).is_dir()
    if is_folder and is_towers_folder(Path(source)):
        model, tokenizer, processor = load_towers(Path(source))
        return ClipBundle(model.to(device), tokenizer, processor, model.towers_config.max_text_tokens, device)
    _check_reachable(source, offline)
    try:
        tokenizer = _load_tokenizer(source, offline)
        processor = CLIPImageProcessor.from_pretrained(source, local_files_only=offline)
        if is_folder and not has_weights(source):
            log.warning("%s has no weights: the CLIP architecture is randomly initialised (seed %d)", source, seed)
            model = _random_init(CLIPConfig.from_pretrained(source), seed)
        else:
            model = CLIPModel.from_pretrained(source, local_files_only=offline, dtype=torch.float32)
    except OSError as error:
        raise ClipLoadError(f"could not load CLIP from {source!r}: {error}") from error
    max_tokens = min(cfg.max_text_tokens, model.config.text_config.max_position_embeddings)
    return ClipBundle(model.to(device), tokenizer, processor, max_tokens, device)


def initial_bundle(cfg: ClipSettings, captions: list[str] | None, tokenizer_dir: Path | None, device: torch.device) -> ClipBundle:
    """The model fine-tuning starts from, which is also the 'base' that evaluation compares against.

    For `small`, the tokenizer is trained on `captions` at fine-tuning time and reloaded from
    the fine-tuned folder (`tokenizer_dir`) at evaluation time, so both see the same vocabulary.
    """
    if cfg.model == TOWERS:
        model, tokenizer = new_towers(cfg.towers, cfg.seed)
        return ClipBundle(model.to(device), tokenizer, towers_processor(cfg.towers.image_size), cfg.towers.max_text_tokens, device)
    if cfg.model != SMALL:
        return load_source(cfg.model, cfg, hub_offline(), cfg.seed, device)
    if tokenizer_dir is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    elif captions:
        tokenizer = train_tokenizer(captions, cfg.small)
    else:
        raise ClipLoadError("clip.model=small needs training captions to build its tokenizer")
    model = _random_init(small_config(cfg.small, len(tokenizer)), cfg.seed)
    return ClipBundle(model.to(device), tokenizer, small_processor(cfg.small), cfg.small.max_text_tokens, device)


def save_bundle(bundle: ClipBundle, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    bundle.model.save_pretrained(folder, safe_serialization=True)
    bundle.tokenizer.save_pretrained(folder)
    bundle.processor.save_pretrained(folder)


def load_saved_clip(folder: Path, device: str = "auto") -> ClipBundle:
    """A folder written by `save_bundle` (or any saved CLIP), loaded offline."""
    cfg = ClipSettings(model=str(folder))
    return load_source(str(folder), cfg, offline=True, seed=0, device=pick_device(device))


def normalise_pixels(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC (already on the device) -> normalised float NCHW: the only image work done per step."""
    return (images.permute(0, 3, 1, 2).float().div_(255) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def pixel_values(bundle: ClipBundle, images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW on the model's device (normalising there, not in Python)."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:  # a memory-mapped index or shard: torch wants its own
        images = np.array(images)
    batch = torch.as_tensor(images).to(bundle.device, non_blocking=True)
    mean = torch.tensor(bundle.processor.image_mean, device=bundle.device)
    std = torch.tensor(bundle.processor.image_std, device=bundle.device)
    return normalise_pixels(batch, mean, std)


def tokenize(bundle: ClipBundle, texts: list[str]) -> dict[str, torch.Tensor]:
    # Padded to the longest text, not to max_length: the causal mask makes the result identical and a
    # short title costs a fraction of 77 positions (a ViT-B/32 query: 83 -> 27 ms on one CPU thread).
    encoded = bundle.tokenizer(texts, padding="longest", truncation=True, max_length=bundle.max_text_tokens, return_tensors="pt")
    return {"input_ids": encoded["input_ids"].to(bundle.device), "attention_mask": encoded["attention_mask"].to(bundle.device)}


def features(output: torch.Tensor | object) -> torch.Tensor:
    """transformers 5 returns a model output from get_*_features; older versions a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def image_features(bundle: ClipBundle, images: np.ndarray | torch.Tensor) -> torch.Tensor:
    return features(bundle.model.get_image_features(pixel_values=pixel_values(bundle, images)))


def text_features(bundle: ClipBundle, texts: list[str]) -> torch.Tensor:
    return features(bundle.model.get_text_features(**tokenize(bundle, texts)))


@torch.inference_mode()
def embed_texts(bundle: ClipBundle, texts: list[str], batch_size: int = 256) -> np.ndarray:
    bundle.model.eval()
    parts = [torch.nn.functional.normalize(text_features(bundle, texts[i:i + batch_size]).float(), dim=-1).cpu()
             for i in range(0, len(texts), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, bundle.model.config.projection_dim), np.float32)


@torch.inference_mode()
def embed_images(bundle: ClipBundle, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    bundle.model.eval()
    parts = [torch.nn.functional.normalize(image_features(bundle, images[i:i + batch_size]).float(), dim=-1).cpu()
             for i in range(0, len(images), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, bundle.model.config.projection_dim), np.float32)


def prompt_probabilities(bundle: ClipBundle, prompt_embeds: np.ndarray, image_embed: np.ndarray) -> np.ndarray:
    """Zero-shot: the softmax over the prompts of their similarity to one cover, at the model's temperature."""
    logits = torch.from_numpy(np.ascontiguousarray(prompt_embeds @ image_embed)) * bundle.model.logit_scale.exp().item()
    return torch.softmax(logits, dim=0).numpy()


def embed_image_paths(bundle: ClipBundle, paths: list[Path]) -> np.ndarray:
    images = np.stack([load_cover(path, bundle.image_size) for path in paths]) if paths else np.zeros((0, 1, 1, 3), np.uint8)
    return embed_images(bundle, images)


def _encoder_forward_flops(tokens: int, width: int, intermediate: int, layers: int) -> float:
    """Matmul FLOPs of a pre-norm transformer encoder: QKV + output projections, attention, MLP (2 per multiply-add)."""
    per_layer = 8 * tokens * width**2 + 4 * tokens * width * intermediate + 4 * tokens**2 * width
    return float(layers * per_layer)


def train_flops_per_pair(config: CLIPConfig, text_tokens: int) -> float:
    """Model FLOPs of one training step per (image, text) pair: 3 x the forward (the backward costs two forwards).

    ViT-B/32 at 77 text tokens: 8.8 (image) + 6.0 (text) GFLOP forward, ~44 GFLOP per training step.
    """
    vision, text = config.vision_config, config.text_config
    patches = (vision.image_size // vision.patch_size) ** 2
    image = (_encoder_forward_flops(patches + 1, vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers)
             + 2 * patches * 3 * vision.patch_size**2 * vision.hidden_size + 2 * vision.hidden_size * config.projection_dim)
    words = (_encoder_forward_flops(text_tokens, text.hidden_size, text.intermediate_size, text.num_hidden_layers)
             + 2 * text.hidden_size * config.projection_dim)
    return 3 * (image + words)
