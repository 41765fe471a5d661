"""CLIP building blocks: loss, retrieval metrics, tokenizer, splits, image decoding, batching, training, save/load."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED_MODELS
from PIL import Image
from safetensors.torch import load_file

from tasks.clip.checkpoints import LATEST, Checkpointer, best_name
from tasks.clip.data import PairSet, book_split, load_images, with_splits
from tasks.clip.evaluation import recall_at_k
from tasks.clip.loop import train
from tasks.clip.loss import MAX_LOGIT_SCALE, contrastive_loss
from tasks.clip.model import (
    ClipBundle,
    ClipLoadError,
    embed_images,
    embed_texts,
    hub_offline,
    initial_bundle,
    load_cover,
    load_saved_clip,
    load_source,
    save_bundle,
    small_config,
    tokenize,
    train_tokenizer,
)
from tasks.clip.sampling import random_batches as batches
from tasks.platform.settings import ClipSettings, SmallClipSettings

SMALL = SmallClipSettings(image_size=32, patch_size=8, hidden_size=32, layers=1, heads=2,
                          projection_dim=32, vocab_size=300, max_text_tokens=16)
CPU = torch.device("cpu")

# Colour -> word: the caption says what colour the cover is, so a CLIP can learn the pairing.
COLOURS = {
    "crimson": (220, 30, 30),
    "emerald": (30, 200, 60),
    "azure": (40, 70, 230),
    "golden": (240, 210, 40),
}
NOUNS = ("river", "castle", "garden", "letters", "winter", "harbor")


def _captions() -> list[str]:
    return [f"the {word} {noun} by ann lee" for word in COLOURS for noun in NOUNS] + \
           [f"a {word} book about {noun}" for word in COLOURS for noun in NOUNS]


def _pairs(n: int, seed: int, words: list[str] | None = None) -> PairSet:
    """n solid-colour 32x32 covers with noise; caption i names the colour of image i (or `words[i]` if given)."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    images, captions = [], []
    for i in range(n):
        colour = names[i % len(names)]
        pixels = np.array(COLOURS[colour], dtype=np.int16)[None, None, :] + rng.integers(-20, 21, size=(32, 32, 3))
        images.append(np.clip(pixels, 0, 255).astype(np.uint8))
        word = words[i] if words is not None else colour
        captions.append(f"the {word} {NOUNS[int(rng.integers(len(NOUNS)))]} by ann lee")
    return PairSet(np.stack(images), captions)


def _clip_settings(**overrides: object) -> ClipSettings:
    return ClipSettings(model="small", small=SMALL, device="cpu", **overrides)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models are dominated by per-op overhead; on a busy 2-core runner, spinning OpenMP threads
    make them ~50x slower. One intra-op thread keeps the training tests well under a second."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(_captions(), SMALL)


@pytest.fixture()
def small_bundle() -> ClipBundle:
    return initial_bundle(_clip_settings(seed=7), _captions(), None, CPU)


# ---------------------------------------------------------------- contrastive_loss


def test_contrastive_loss_aligned_is_near_zero_and_shuffled_is_high() -> None:
    embeds = torch.eye(8) * 3.0  # orthogonal, and not unit-norm: the loss normalises
    scale = torch.tensor(MAX_LOGIT_SCALE)
    aligned = contrastive_loss(embeds, embeds.clone(), scale)
    shuffled = contrastive_loss(embeds, embeds.roll(1, dims=0), scale)
    assert aligned.item() < 1e-3
    assert shuffled.item() > 50.0  # the true caption scores 0 against 100 for a wrong one
    assert aligned.ndim == 0


def test_contrastive_loss_shuffled_is_higher_on_random_near_aligned_embeddings() -> None:
    torch.manual_seed(0)
    images = torch.randn(16, 32)
    texts = images + 0.1 * torch.randn(16, 32)
    scale = torch.tensor(math.log(50.0))
    aligned = contrastive_loss(images, texts, scale).item()
    shuffled = contrastive_loss(images, texts[torch.randperm(16)], scale).item()
    assert aligned < 0.1
    assert shuffled > aligned + 5.0


def test_contrastive_loss_is_symmetric() -> None:
    torch.manual_seed(1)
    images, texts = torch.randn(10, 16), torch.randn(10, 16)
    scale = torch.tensor(math.log(20.0))
    forward = contrastive_loss(images, texts, scale)
    backward = contrastive_loss(texts, images, scale)
    assert torch.allclose(forward, backward, atol=1e-6)
    # and it does depend on the pairing: not a constant
    assert not torch.allclose(forward, contrastive_loss(images, texts.flip(0), scale))


def test_contrastive_loss_clamps_logit_scale_at_log_100() -> None:
    torch.manual_seed(2)
    images, texts = torch.randn(6, 8), torch.randn(6, 8)
    at_max = contrastive_loss(images, texts, torch.tensor(math.log(100.0)))
    above = contrastive_loss(images, texts, torch.tensor(math.log(10_000.0)))
    below = contrastive_loss(images, texts, torch.tensor(math.log(30.0)))
    assert MAX_LOGIT_SCALE == pytest.approx(math.log(100.0))
    assert torch.allclose(above, at_max)
    assert not torch.allclose(below, at_max)
    # hand-computed reference at temperature exactly 100
    img, txt = torch.nn.functional.normalize(images, dim=-1), torch.nn.functional.normalize(texts, dim=-1)
    logits = 100.0 * img @ txt.T
    labels = torch.arange(6)
    expected = (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
    assert torch.allclose(above, expected, atol=1e-5)


# ---------------------------------------------------------------- recall_at_k


def test_recall_at_k_identity_is_perfect() -> None:
    metrics = recall_at_k(np.eye(5), [1, 5, 10])
    assert set(metrics) == {f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)} | {"mean_recall"}
    assert all(value == 1.0 for value in metrics.values())


def test_recall_at_k_hand_built_matrix() -> None:
    # rows = images, columns = texts; the diagonal holds the true pairs.
    similarity = np.array([
        [1.0, 0.0, 0.0, 0.0],   # row rank 0
        [0.9, 0.5, 0.8, 0.0],   # row rank 2 (0.9 and 0.8 beat 0.5)
        [0.0, 0.0, 0.5, 0.6],   # row rank 1
        [0.0, 0.0, 0.0, 0.7],   # row rank 0
    ])
    # column ranks: col0 0, col1 0, col2 1 (0.8 beats 0.5), col3 0
    metrics = recall_at_k(similarity, [1, 2])
    assert metrics["image_to_text_R@1"] == pytest.approx(0.5)
    assert metrics["image_to_text_R@2"] == pytest.approx(0.75)
    assert metrics["text_to_image_R@1"] == pytest.approx(0.75)
    assert metrics["text_to_image_R@2"] == pytest.approx(1.0)
    assert metrics["mean_recall"] == pytest.approx(np.mean([0.5, 0.75, 0.75, 1.0]))
    # transposing swaps the two directions
    swapped = recall_at_k(similarity.T, [1, 2])
    assert swapped["image_to_text_R@1"] == pytest.approx(0.75)
    assert swapped["text_to_image_R@1"] == pytest.approx(0.5)


def test_recall_at_k_empty() -> None:
    assert recall_at_k(np.zeros((0, 0)), [1]) == {}


def test_recall_by_genre_splits_text_to_image_hits_by_the_books_genre() -> None:
    from tasks.clip.evaluation import recall_by_genre

    similarity = np.eye(12)
    similarity[:, 6:] = 0.5  # the last 6 captions rank every cover alike: their own cover is not first
    genres = ["Travel"] * 6 + ["Law"] * 5 + ["Art"]
    assert recall_by_genre(similarity, genres, k=1) == {"Travel": 1.0, "Law": 0.0}  # Art: 1 book, too few to say


# ---------------------------------------------------------------- tokenizer / config


def test_train_tokenizer_bos_eos_and_padding(tokenizer) -> None:
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1, 3)
    assert len(tokenizer) <= SMALL.vocab_size
    encoded = tokenizer(["the crimson river by ann lee"], padding="max_length", truncation=True, max_length=16)
    ids, mask = encoded["input_ids"][0], encoded["attention_mask"][0]
    assert len(ids) == 16
    length = sum(mask)
    assert ids[0] == 0
    assert ids[length - 1] == 1
    assert 2 < length < 16
    assert ids[length:] == [3] * (16 - length)
    assert 1 not in ids[1:length - 1] and 0 not in ids[1:length - 1]
    # lower-casing normaliser: case does not change the ids
    assert tokenizer("THE Crimson RIVER")["input_ids"] == tokenizer("the crimson river")["input_ids"]


def test_truncated_caption_still_ends_with_eos(tokenizer) -> None:
    long_caption = " ".join(["the golden castle by ann lee"] * 10)
    ids = tokenizer([long_caption], padding="max_length", truncation=True, max_length=16)["input_ids"][0]
    assert len(ids) == 16 and ids[0] == 0 and ids[-1] == 1


def test_small_config_eos_matches_tokenizer_and_pools_at_eos(tokenizer) -> None:
    config = small_config(SMALL, len(tokenizer))
    assert config.text_config.eos_token_id == tokenizer.eos_token_id == 1
    assert config.text_config.bos_token_id == 0 and config.text_config.pad_token_id == 3
    assert config.text_config.vocab_size == len(tokenizer)
    assert config.text_config.max_position_embeddings == SMALL.max_text_tokens
    assert config.vision_config.image_size == 32 and config.vision_config.patch_size == 8
    assert config.projection_dim == 32

    from transformers import CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    encoded = tokenizer(["the azure garden by ann lee", "a golden book"], padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        out = model.text_model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
    eos_at = encoded["attention_mask"].sum(dim=1) - 1
    assert (encoded["input_ids"][torch.arange(2), eos_at] == 1).all()
    expected = out.last_hidden_state[torch.arange(2), eos_at]
    assert torch.allclose(out.pooler_output, expected, atol=1e-6)


# ---------------------------------------------------------------- splits


def test_book_split_is_deterministic_and_respects_fractions() -> None:
    ids = [f"978{i:010d}" for i in range(2000)]
    first = [book_split(book_id, 0.15, 0.15) for book_id in ids]
    again = [book_split(book_id, 0.15, 0.15) for book_id in ids]
    assert first == again
    assert set(first) == {"train", "val", "test"}
    shares = pd.Series(first).value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.15, abs=0.03)
    assert shares["val"] == pytest.approx(0.15, abs=0.03)
    assert shares["train"] == pytest.approx(0.70, abs=0.04)
    # growing the validation share moves books only from train into val
    wider = [book_split(book_id, 0.30, 0.15) for book_id in ids]
    assert all(w == f for w, f in zip(wider, first) if f in ("test", "val"))
    assert pd.Series(wider).value_counts(normalize=True)["val"] == pytest.approx(0.30, abs=0.04)


def test_with_splits_order_independent_and_one_split_per_book() -> None:
    books = pd.DataFrame({"book_id": [f"isbn-{i}" for i in range(2000)], "title": [f"t{i}" for i in range(2000)]})
    split = with_splits(books, 0.15, 0.15)
    assert "split" not in books  # input left alone
    assert len(split) == len(books)
    assert split["split"].isin(["train", "val", "test"]).all()
    shuffled = with_splits(books.sample(frac=1.0, random_state=3).reset_index(drop=True), 0.15, 0.15)
    mapping = dict(zip(split["book_id"], split["split"]))
    assert dict(zip(shuffled["book_id"], shuffled["split"])) == mapping
    # each book is in exactly one split
    assert shuffled.groupby("book_id")["split"].nunique().eq(1).all()
    sets = {name: set(split.loc[split["split"] == name, "book_id"]) for name in ("train", "val", "test")}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert sum(len(s) for s in sets.values()) == 2000


# ---------------------------------------------------------------- image decoding


def _write_image(path: Path, width: int, height: int, fmt: str, seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return pixels


def test_load_cover_resizes_and_crops(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    _write_image(path, 100, 60, "PNG")
    cover = load_cover(path, 32)
    assert cover.shape == (32, 32, 3) and cover.dtype == np.uint8
    tall = tmp_path / "tall.png"
    _write_image(tall, 40, 90, "PNG")
    assert load_cover(tall, 24).shape == (24, 24, 3)


def test_load_cover_centre_crop_keeps_the_middle(tmp_path: Path) -> None:
    # left third red, middle green, right third blue: the centre crop of a 90x30 image is green.
    pixels = np.zeros((30, 90, 3), dtype=np.uint8)
    pixels[:, :30, 0] = 255
    pixels[:, 30:60, 1] = 255
    pixels[:, 60:, 2] = 255
    path = tmp_path / "bands.png"
    Image.fromarray(pixels).save(path)
    cover = load_cover(path, 30).astype(int)
    assert cover.shape == (30, 30, 3)
    centre = cover[5:25, 5:25]
    assert centre[..., 1].min() > 200 and centre[..., 0].max() < 50 and centre[..., 2].max() < 50


def test_load_cover_png_with_jpg_name_and_greyscale(tmp_path: Path) -> None:
    path = tmp_path / "actually-png.jpg"
    pixels = _write_image(path, 32, 32, "PNG")
    cover = load_cover(path, 32)
    assert np.array_equal(cover, pixels)  # same size: no resize, lossless PNG bytes
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((40, 40), 128, dtype=np.uint8), mode="L").save(grey)
    assert load_cover(grey, 32).shape == (32, 32, 3)


def test_load_images_masks_corrupt_and_missing_files(tmp_path: Path) -> None:
    good_a, good_b = tmp_path / "a.jpg", tmp_path / "b.png"
    _write_image(good_a, 50, 70, "JPEG", seed=1)
    _write_image(good_b, 64, 64, "PNG", seed=2)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    missing = tmp_path / "missing.jpg"
    paths = [str(good_a), str(truncated), str(good_b), str(garbage), str(missing)]
    images, ok = load_images(paths, 32, workers=1)
    assert ok.tolist() == [True, False, True, False, False]
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images[1], load_cover(good_b, 32))
    none, none_ok = load_images([str(garbage)], 16, workers=1)
    assert none.shape == (0, 16, 16, 3) and not none_ok.any()


# ---------------------------------------------------------------- batching


def test_training_batches_are_full_and_shuffled() -> None:
    result = batches(50, 16, np.random.default_rng(0))
    assert [len(b) for b in result] == [16, 16, 16]
    flat = np.concatenate(result)
    assert len(set(flat.tolist())) == 48 and set(flat.tolist()) <= set(range(50))
    assert not np.array_equal(flat, np.arange(48))
    # a different generator state gives a different order
    other = np.concatenate(batches(50, 16, np.random.default_rng(1)))
    assert not np.array_equal(flat, other)
    # fewer items than a batch: one (shuffled) batch of all of them
    small = batches(10, 16, np.random.default_rng(0))
    assert len(small) == 1 and sorted(small[0].tolist()) == list(range(10))


def test_eval_batches_cover_every_index_once() -> None:
    result = batches(34, 16, None)
    assert [len(b) for b in result] == [16, 16, 2]
    assert np.array_equal(np.concatenate(result), np.arange(34))
    exact = batches(32, 16, None)
    assert np.array_equal(np.concatenate(exact), np.arange(32))
    # a single-item tail has no negatives: it alone is dropped
    tail = batches(33, 16, None)
    assert [len(b) for b in tail] == [16, 16]
    assert batches(1, 16, None) == []


# ---------------------------------------------------------------- training


def _fresh_from_checkpoint(bundle: ClipBundle, path: Path):
    """A new CLIPModel of the same architecture with the checkpoint's weights (strict safetensors load)."""
    from transformers import CLIPModel

    torch.manual_seed(123)  # different random init from the trained model
    fresh = CLIPModel(bundle.model.config)
    fresh.load_state_dict({k.removeprefix("model."): v for k, v in load_file(str(path)).items()})
    return fresh


def test_train_end_to_end_checkpoints_and_restores_best(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = _clip_settings(epochs=4, batch_size=16, learning_rate=2e-3, warmup_fraction=0.0, weight_decay=0.0, seed=0)
    train_pairs, val_pairs = _pairs(48, seed=0), _pairs(16, seed=1)
    bundle = initial_bundle(cfg, train_pairs.captions, None, CPU)
    seen: list[int] = []
    checkpoints = tmp_path / "checkpoints"
    history, best = train(bundle, train_pairs, val_pairs, cfg, Checkpointer(checkpoints, "run"), on_epoch=lambda r: seen.append(r.epoch))

    assert sorted(p.name for p in checkpoints.iterdir()) == [best_name(best), LATEST]
    assert [r.epoch for r in history] == [1, 2, 3, 4] == seen
    assert all(math.isfinite(r.train_loss) and math.isfinite(r.val_loss) for r in history)
    val_losses = [r.val_loss for r in history]
    assert best == int(np.argmin(val_losses)) + 1
    # the colour words are learnable: training lowered both losses below chance (log 16 for a batch of 16)
    assert history[-1].train_loss < history[0].train_loss
    assert min(val_losses) < math.log(16) - 0.2

    fresh = _fresh_from_checkpoint(bundle, checkpoints / best_name(best))
    current = dict(bundle.model.named_parameters())
    for name, parameter in fresh.named_parameters():
        assert torch.equal(current[name].detach(), parameter.detach()), name
    # and the initial weights differ from the trained ones (the check above is not vacuous)
    initial = initial_bundle(cfg, train_pairs.captions, None, CPU).model.state_dict()
    assert not torch.equal(initial["text_projection.weight"], current["text_projection.weight"].detach())


def test_train_restores_an_earlier_best_epoch(tmp_path: Path) -> None:
    """Validation captions name the *wrong* colour: learning the training pairing makes val worse each epoch."""
    torch.manual_seed(0)
    cfg = _clip_settings(epochs=4, batch_size=16, learning_rate=2e-3, warmup_fraction=0.0, weight_decay=0.0, seed=0)
    names = list(COLOURS)
    train_pairs = _pairs(48, seed=0)
    val_pairs = _pairs(16, seed=1, words=[names[(i + 1) % len(names)] for i in range(16)])
    bundle = initial_bundle(cfg, train_pairs.captions, None, CPU)
    history, best = train(bundle, train_pairs, val_pairs, cfg, Checkpointer(tmp_path / "ckpt", "run"))
    assert best == int(np.argmin([r.val_loss for r in history])) + 1
    assert best < 4, [r.val_loss for r in history]

    fresh = _fresh_from_checkpoint(bundle, tmp_path / "ckpt" / best_name(best))
    last_state = {k.removeprefix("model."): v for k, v in load_file(str(tmp_path / "ckpt" / LATEST)).items() if k.startswith("model.")}
    for name in ("text_projection.weight", "visual_projection.weight", "logit_scale"):
        trained = bundle.model.state_dict()[name]
        assert torch.equal(trained, fresh.state_dict()[name]), name
        assert not torch.equal(trained, last_state[name]), name


# ---------------------------------------------------------------- save / load


def test_save_bundle_then_load_saved_clip_embeds_identically(tmp_path: Path, small_bundle: ClipBundle) -> None:
    folder = tmp_path / "clip"
    save_bundle(small_bundle, folder)
    assert (folder / "model.safetensors").exists()
    reloaded = load_saved_clip(folder, "cpu")
    assert reloaded.image_size == small_bundle.image_size == 32
    assert reloaded.max_text_tokens == small_bundle.max_text_tokens == 16
    texts = ["the crimson river by ann lee", "a golden book about winter", "an unseen caption with zebras"]
    assert torch.equal(tokenize(reloaded, texts)["input_ids"], tokenize(small_bundle, texts)["input_ids"])
    images = _pairs(5, seed=4).images
    original_text, reloaded_text = embed_texts(small_bundle, texts), embed_texts(reloaded, texts)
    original_image, reloaded_image = embed_images(small_bundle, images), embed_images(reloaded, images)
    assert original_text.shape == (3, 32) and original_image.shape == (5, 32)
    np.testing.assert_allclose(reloaded_text, original_text, atol=1e-5)
    np.testing.assert_allclose(reloaded_image, original_image, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(original_text, axis=1), 1.0, atol=1e-5)
    # different texts embed differently (the comparison above is not vacuous)
    assert not np.allclose(original_text[0], original_text[1], atol=1e-3)


def test_load_source_hub_id_offline_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline()
    with pytest.raises(ClipLoadError, match="HF_HUB_OFFLINE"):
        load_source("openai/clip-vit-base-patch32", ClipSettings(model="openai/clip-vit-base-patch32"),
                    hub_offline(), 0, CPU)


def test_load_source_missing_local_path_raises_even_online(tmp_path: Path) -> None:
    with pytest.raises(ClipLoadError):
        load_source(str(tmp_path / "nope"), ClipSettings(), False, 0, CPU)


NOWEIGHTS = SHARED_MODELS / "clip-vit-base-patch32-noweights"


@pytest.mark.skipif(not NOWEIGHTS.is_dir(), reason=f"{NOWEIGHTS} is not present on this machine")
def test_load_source_folder_without_weights_builds_random_vit_b32() -> None:
    bundle = load_source(str(NOWEIGHTS), ClipSettings(model=str(NOWEIGHTS)), True, 0, CPU)
    assert len(bundle.tokenizer) == 49408
    vision = bundle.model.config.vision_config
    assert vision.patch_size == 32 and vision.image_size == 224
    assert bundle.image_size == 224
    assert bundle.max_text_tokens == min(77, bundle.model.config.text_config.max_position_embeddings)
    # random init is seeded: the same seed rebuilds the same weights
    first = bundle.model.text_projection.weight.detach().clone()
    del bundle
    again = load_source(str(NOWEIGHTS), ClipSettings(model=str(NOWEIGHTS)), True, 0, CPU)
    assert torch.equal(first, again.model.text_projection.weight)


def test_recall_at_k_counts_ties_against_the_model() -> None:
    """A model that scores every pair alike has learnt nothing; it must not get perfect recall."""
    metrics = recall_at_k(np.ones((4, 4)), [1, 4])
    assert metrics["image_to_text_R@1"] == metrics["text_to_image_R@1"] == 0.0
    assert metrics["image_to_text_R@4"] == 1.0


def test_a_diverged_run_fails_with_advice_instead_of_loading_a_missing_checkpoint(tmp_path: Path) -> None:
    from tasks.platform.errors import DataQualityError

    cfg = _clip_settings(epochs=2, batch_size=16, learning_rate=1e6, warmup_fraction=0.0, seed=0)
    train_pairs, val_pairs = _pairs(32, seed=0), _pairs(16, seed=1)
    bundle = initial_bundle(cfg, train_pairs.captions, None, CPU)
    with pytest.raises(DataQualityError, match="learning_rate"):
        train(bundle, train_pairs, val_pairs, cfg, Checkpointer(tmp_path / "checkpoints", "run"))


def test_recall_at_k_scores_nan_similarities_as_misses() -> None:
    metrics = recall_at_k(np.full((3, 3), np.nan), [1, 2])
    assert metrics["mean_recall"] == 0.0


def test_test_covers_are_decoded_once_per_image_size(tmp_path: Path) -> None:
    from tasks.clip.evaluation import TestCovers

    path = tmp_path / "cover.jpg"
    Image.new("RGB", (60, 90), "red").save(path)
    covers = TestCovers(pd.DataFrame({"image_path": [str(path), str(path)]}))
    small, large = covers.at(32), covers.at(64)
    assert small.shape == (2, 32, 32, 3) and large.shape == (2, 64, 64, 3)
    assert covers.at(32) is small


def test_padding_to_the_longest_text_embeds_exactly_as_padding_to_max_length(small_bundle: ClipBundle) -> None:
    """Queries are tokenized to their own length (fast); the causal mask must make that invisible."""
    texts = ["a", "the crimson river by ann lee", "a golden book about winter letters and castles"]
    shortest = embed_texts(small_bundle, texts)
    encoded = small_bundle.tokenizer(texts, padding="max_length", truncation=True, max_length=small_bundle.max_text_tokens,
                                     return_tensors="pt")
    with torch.inference_mode():
        small_bundle.model.eval()
        full = small_bundle.model.get_text_features(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
        full = full if isinstance(full, torch.Tensor) else full.pooler_output
    full = torch.nn.functional.normalize(full.float(), dim=-1).numpy()
    assert encoded["input_ids"].shape[1] > len(small_bundle.tokenizer(texts[1])["input_ids"])
    np.testing.assert_allclose(shortest, full, atol=1e-5)


@pytest.mark.skipif(not NOWEIGHTS.is_dir(), reason=f"{NOWEIGHTS} is not present on this machine")
def test_train_flops_per_pair_of_vit_b32_is_the_published_44_gflop() -> None:
    from transformers import CLIPConfig

    from tasks.clip.model import train_flops_per_pair

    config = CLIPConfig.from_pretrained(str(NOWEIGHTS))
    assert train_flops_per_pair(config, 77) / 1e9 == pytest.approx(44.3, abs=0.2)  # 3 x (8.8 image + 6.0 text)
    assert train_flops_per_pair(config, 20) < train_flops_per_pair(config, 77)


def test_training_with_balanced_batches_learns_and_draws_them_from_the_genres(tmp_path: Path, monkeypatch) -> None:
    """clip.batch_sampler=balanced reaches the loop: its batches come from the pairs' genres, and it still learns."""
    from dataclasses import replace

    from tasks.clip import loop

    drawn: list[str] = []
    sampled = loop.sampled_batches

    def recording(sampler, size, groups, batch_size, generator):  # noqa: ANN001, ANN202
        drawn.append(sampler)
        assert groups is not None and len(groups) == size
        return sampled(sampler, size, groups, batch_size, generator)

    monkeypatch.setattr(loop, "sampled_batches", recording)
    torch.manual_seed(0)
    cfg = _clip_settings(epochs=3, batch_size=16, learning_rate=2e-3, warmup_fraction=0.0, weight_decay=0.0, batch_sampler="balanced")
    pairs = _pairs(48, seed=0)
    train_pairs = replace(pairs, groups=np.array([caption.split()[1] for caption in pairs.captions]))  # the colour word
    bundle = initial_bundle(cfg, train_pairs.captions, None, CPU)
    history, _ = train(bundle, train_pairs, _pairs(16, seed=1), cfg, Checkpointer(tmp_path / "ckpt", "run"))
    assert drawn == ["balanced"] * 3
    assert history[-1].train_loss < history[0].train_loss
