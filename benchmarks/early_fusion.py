"""Early against late fusion of the read text, on the real data of the last `make run` (`make experiment-early-fusion`).

Late fusion (the default, tasks/reading/fusion.py): the towers CLIP ranks as trained, the read text
is matched by characters, and the two scores are mixed with a weight chosen on validation books.
Early fusion (this experiment, after the issue's question): the towers model's image side sees the
cover's locked EfficientNet features *and* a MiniLM sentence embedding of its read text, so the
learned space itself can carry the printed title. Both heads are trained here exactly as the
towers CLIP trains its heads (locked towers, features computed once, CLIP's contrastive loss,
AdamW with the clip section's rate and decay, the best epoch by validation loss), on the same
train/validation/test books, from the same labeled covers, shards and read texts as the pipeline.

Printed, on the test books with the queries a user types (a title alone, a cover alone): R@1/5/10 both
ways for the towers heads retrained here without read text (a check that this script reproduces
the pipeline's CLIP), with read text in the image side (early fusion), each of them late-fused with
the character match (weights chosen on the validation books), and the character match alone.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from tasks.clip.data import split_frame, with_splits
from tasks.clip.hybrid import title_and_author
from tasks.clip.loss import contrastive_loss
from tasks.clip.model import load_saved_clip, tokenize
from tasks.clip.shards import CoverShards
from tasks.genre.labeling import load_local_classifier, title_query_caption
from tasks.platform.settings import load_settings
from tasks.reading.fusion import choose_weight, diagonal_recall, fused
from tasks.reading.stage import with_read_text
from tasks.reading.text_match import TextMatcher

KS = [1, 5, 10]


@torch.inference_mode()
def sentence_features(model: nn.Module, bundle: object, texts: list[str], batch_size: int = 128) -> np.ndarray:
    """The locked text tower's mean-pooled features (MiniLM), as the towers CLIP feeds its text head."""
    parts = [
        model.tower_text_features(**tokenize(bundle, texts[i : i + batch_size])).float().numpy()
        for i in range(0, len(texts), batch_size)
    ]
    return np.concatenate(parts)


class Heads(nn.Module):
    def __init__(self, image_dim: int, text_dim: int, projection: int) -> None:
        super().__init__()
        self.image, self.text = nn.Linear(image_dim, projection), nn.Linear(text_dim, projection)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return nn.functional.normalize(self.image(torch.from_numpy(images)), dim=-1).numpy()

    def embed_texts(self, texts: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return nn.functional.normalize(self.text(torch.from_numpy(texts)), dim=-1).numpy()


def train_heads(
    images: dict[str, np.ndarray],
    texts: dict[str, np.ndarray],
    projection: int,
    epochs: int,
    batch: int,
    lr: float,
    decay: float,
    seed: int,
) -> tuple[Heads, int]:
    """Heads trained on the train split, the epoch with the lowest validation loss kept."""
    torch.manual_seed(seed)
    heads = Heads(images["train"].shape[1], texts["train"].shape[1], projection)
    optimiser = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=decay)
    best, best_state, best_epoch = float("inf"), None, 0
    train_images, train_texts = torch.from_numpy(images["train"]), torch.from_numpy(texts["train"])
    for epoch in range(1, epochs + 1):
        heads.train()
        for rows in torch.randperm(len(train_images)).split(batch):
            if len(rows) < 2:
                continue
            loss = contrastive_loss(heads.image(train_images[rows]), heads.text(train_texts[rows]), heads.logit_scale)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.inference_mode():
            val_images, val_texts = torch.from_numpy(images["val"]), torch.from_numpy(texts["val"])
            val = float(
                np.mean(
                    [
                        contrastive_loss(heads.image(val_images[r]), heads.text(val_texts[r]), heads.logit_scale)
                        for r in torch.arange(len(val_images)).split(batch)
                        if len(r) > 1
                    ]
                )
            )
        if val < best:
            best, best_epoch = val, epoch
            best_state = {k: v.clone() for k, v in heads.state_dict().items()}
    heads.load_state_dict(best_state)
    return heads, best_epoch


def recall_row(t2i: np.ndarray, i2t: np.ndarray) -> str:
    a, b = diagonal_recall(t2i, KS), diagonal_recall(i2t, KS)
    return "/".join(f"{a[f'R@{k}']:.3f}" for k in KS) + "   " + "/".join(f"{b[f'R@{k}']:.3f}" for k in KS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--epochs", type=int, default=None, help="default: clip.epochs")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    settings = load_settings(args.params)
    paths, clip = settings.paths, settings.clip
    started = time.perf_counter()
    labeled = with_read_text(pd.read_parquet(paths.labeled_covers), paths.cover_text).assign(
        shard_row=lambda f: np.arange(len(f))
    )
    shards = CoverShards.open(paths.cover_shards, None)
    usable = shards.rows["shard_error"].isna().to_numpy()
    books = with_splits(labeled[usable].reset_index(drop=True), clip.val_fraction, clip.test_fraction)
    bundle = load_saved_clip(paths.cover_index / "clip", "cpu")
    tower = bundle.model
    classifier = load_local_classifier(paths.classifier_dir)
    captions = sentence_features(tower, bundle, books["caption"].tolist())
    reading = sentence_features(tower, bundle, books["read_text"].str.lower().tolist())
    image = np.asarray(shards.features[books["shard_row"].to_numpy()], np.float32)
    split = {name: (books["split"] == name).to_numpy() for name in ("train", "val", "test")}
    print(
        f"{len(books)} books ({split['train'].sum()} train, {split['val'].sum()} val, {split['test'].sum()} test); "
        f"features in {time.perf_counter() - started:.0f} s"
    )

    def queries(part: pd.DataFrame) -> np.ndarray:
        predicted = classifier.predict(pd.DataFrame({"title": part["title"], "author": ""}))
        typed = [
            title_query_caption(settings.labeling.caption_template, t, str(g), float(p))
            for t, g, p in zip(part["title"], predicted["genre"], predicted["probability"])
        ]
        return sentence_features(tower, bundle, typed)

    parts = {name: split_frame(books, name) for name in ("val", "test")}
    typed = {name: queries(part) for name, part in parts.items()}
    text = {
        name: (
            TextMatcher.from_texts(part["read_text"].tolist()).similarity(part["title"].tolist()),
            TextMatcher.from_texts(title_and_author(part)).similarity(part["read_text"].tolist()),
        )
        for name, part in parts.items()
    }
    print(f"{'test books, queries as typed':44s} title->cover R@1/5/10   cover->title R@1/5/10")
    print(f"{'read text alone (characters)':44s} {recall_row(*text['test'])}")
    for name, image_features in (
        ("towers heads, no read text", image),
        ("early fusion: + MiniLM(read text)", np.hstack([image, reading])),
    ):
        heads, epoch = train_heads(
            {s: image_features[m] for s, m in split.items()},
            {s: captions[m] for s, m in split.items()},
            clip.towers.projection_dim,
            args.epochs or clip.epochs,
            clip.batch_size,
            clip.learning_rate,
            clip.weight_decay,
            clip.seed,
        )
        sims = {}
        for part in ("val", "test"):
            covers = heads.embed_images(image_features[split[part]])
            sims[part] = (heads.embed_texts(typed[part]) @ covers.T, covers @ heads.embed_texts(captions[split[part]]).T)
        print(f"{name + f' (best epoch {epoch})':44s} {recall_row(*sims['test'])}")
        weights = [choose_weight(sims["val"][d], text["val"][d], settings.hybrid.weight_grid, KS).weight for d in (0, 1)]
        late = [fused(sims["test"][d], text["test"][d], weights[d]) for d in (0, 1)]
        print(f"{'  + late fusion, weights ' + '/'.join(f'{w:g}' for w in weights):44s} {recall_row(*late)}")
    reference = json.loads((paths.metrics_dir / "clip.json").read_text()).get("hybrid", {})
    if reference:
        print(
            "the pipeline's own figures (metrics/clip.json): "
            + json.dumps({k: reference[k] for k in ("clip", "read_text", "hybrid")})
        )


if __name__ == "__main__":
    main()
