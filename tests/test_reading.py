"""Reading covers: the reader offline on covers that print their title, a failed read recorded (never
fatal), character matching that survives the reader's merged words, the fusion and identification
rules, and fusion weights chosen on the validation books only."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tasks.inputs.synthetic_covers import render_cover
from tasks.platform.engine import IN_PROCESS
from tasks.platform.sections import HybridSettings, ReadingSettings
from tasks.reading.fusion import choose_weight, diagonal_recall, fused, identified
from tasks.reading.reader import CoverReader, tallest
from tasks.reading.stage import read_images, reading_metrics, with_read_text
from tasks.reading.text_match import TextMatcher, ngram_counts, squeezed

TITLES = [
    ("Rick Steves Paris Walking Guide", "Anna Smith", "Travel"),
    ("The Ultimate Atlas", "Tom Lee", "Reference"),
    ("Cooking with Herbs", "Mia Chen", "Cookbooks, Food & Wine"),
    ("Mystery at Midnight", "Sam Roe", "Mystery, Thriller & Suspense"),
]


@pytest.fixture(scope="module")
def reader() -> CoverReader:
    return CoverReader(ReadingSettings())


@pytest.fixture(scope="module")
def printed_covers(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Covers drawn as the embedded data set draws them: the title and author printed on bands."""
    folder = tmp_path_factory.mktemp("printed")
    paths = []
    for i, (title, author, genre) in enumerate(TITLES):
        path = folder / f"{i}.jpg"
        path.write_bytes(render_cover(genre, title, author, (96, 144), np.random.default_rng(i)))
        paths.append(path)
    return paths


def test_the_reader_reads_printed_titles_with_no_network(
    reader: CoverReader, printed_covers: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    fresh = CoverReader(ReadingSettings())  # the models load from the installed package, not from a hub
    for path, (title, author, _) in zip(printed_covers, TITLES):
        reading = fresh.read(path)
        assert reading.error is None
        assert squeezed(title) in squeezed(reading.text), (title, reading.text)
        assert all(0.5 <= line.confidence <= 1 and len(line.box) == 8 for line in reading.lines)


def test_a_cover_that_cannot_be_read_is_recorded_with_its_reason(
    reader: CoverReader, printed_covers: list[Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    assert reader.read(broken).error and reader.read(tmp_path / "missing.jpg").error
    paths = [str(printed_covers[0]), str(broken), str(tmp_path / "missing.jpg"), str(printed_covers[1])]
    frame = read_images(paths, ReadingSettings(), IN_PROCESS.model_copy(update={"chunk_covers": 2}))
    assert frame["image_path"].tolist() == paths
    assert frame["read_error"].notna().tolist() == [False, True, True, False]
    assert frame["text"].tolist()[1:3] == ["", ""] and "paris" in frame["text"][0].lower()
    metrics = reading_metrics(frame, 1.0, ReadingSettings(), "in process")
    assert (metrics["covers"], metrics["with_text"], metrics["failed"]) == (4, 2, 2)
    labeled = pd.DataFrame({"image_path": [paths[3], "elsewhere.jpg"]})
    frame.to_parquet(tmp_path / "text.parquet")
    assert with_read_text(labeled, tmp_path / "text.parquet")["read_text"].tolist() == [frame["text"][3], ""]


def test_only_the_tallest_lines_are_recognised_in_reading_order() -> None:
    boxes = [np.array([[0, y], [50, y], [50, y + h], [0, y + h]], float) for y, h in ((0, 5), (10, 20), (40, 8), (60, 30))]
    kept = tallest(boxes, 2)
    assert [int(b[0][1]) for b in kept] == [10, 60]
    assert tallest(boxes, 0) == boxes and tallest(boxes, 9) == boxes


def test_characters_match_whatever_the_reader_did_to_spaces_and_case() -> None:
    assert squeezed("The Ultimate Atlas!") == squeezed("THEULTIMATEATLAS") == "theultimateatlas"
    matcher = TextMatcher.from_texts(["THEULTIMATEATLAS TOMLEE", "COOKING WITH HERBS", "", "PARIS WALKING GUIDE"])
    scores = matcher.scores("The Ultimate Atlas")
    assert int(np.argmax(scores)) == 0 and scores[2] == 0.0
    assert matcher.scores("!!!").tolist() == [0.0] * 4
    np.testing.assert_allclose(matcher.similarity(["The Ultimate Atlas"])[0], scores, atol=1e-6)


def test_counts_appended_row_wise_equal_a_rebuild() -> None:
    import scipy.sparse as sp

    texts = ["paris guide", "herbs", "", "atlas of the world"]
    appended = sp.vstack([ngram_counts(texts[:2]), ngram_counts(texts[2:])]).tocsr()
    assert (appended != ngram_counts(texts)).nnz == 0
    a, b = TextMatcher.from_counts(appended), TextMatcher.from_texts(texts)
    np.testing.assert_allclose(a.scores("atlas"), b.scores("atlas"))


def test_the_fusion_weight_is_chosen_by_recall_on_the_books_given() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.1, (30, 30)).astype(np.float32)
    text_knows = noise + np.eye(30, dtype=np.float32)  # the read text finds every book; CLIP is noise
    choice = choose_weight(noise, text_knows, [0.0, 0.5, 1.0], [1, 10])
    assert choice.weight > 0 and choice.by_weight["0"] < choice.score
    clip_knows = choose_weight(text_knows, noise, [0.0, 0.5, 1.0], [1, 10])
    assert clip_knows.weight < 1.0
    assert diagonal_recall(np.eye(3), [1]) == {"R@1": 1.0}
    assert diagonal_recall(np.ones((3, 3)), [1, 3]) == {"R@1": 0.0, "R@3": 1.0}  # ties count against the truth
    np.testing.assert_allclose(fused(np.ones(2), np.zeros(2), 0.25), [0.75, 0.75])


def test_a_cover_is_identified_only_with_a_margin_over_other_books() -> None:
    keys = np.array(["a", "b", "a", "c"])
    assert identified(np.array([0.9, 0.5, 0.85, 0.1]), keys, 0.5, 0.1) == 0  # its other edition does not compete
    assert identified(np.array([0.9, 0.85, 0.1, 0.1]), keys, 0.5, 0.1) is None  # two books, too close
    assert identified(np.array([0.4, 0.0, 0.0, 0.0]), keys, 0.5, 0.1) is None  # too weak a match
    assert identified(np.zeros(0), keys[:0], 0.5, 0.1) is None


def test_fixed_weights_in_params_are_used_as_they_are() -> None:
    from tasks.clip.hybrid import BookSignals, chosen_weights

    eye = np.eye(4, dtype=np.float32)
    signals = BookSignals(
        clip={"title_to_cover": eye, "cover_to_title": eye},
        text={"title_to_cover": eye, "cover_to_title": eye},
        genres=["A", "B"],
        classifier_on_text=np.array([[0.9, 0.1]] * 4),
        zero_shot=np.array([[0.2, 0.8]] * 4),
        accepted=[frozenset({"A"})] * 4,
        work_keys=np.array(list("abcd")),
    )
    weights = chosen_weights(signals, HybridSettings(title_text_weight=0.3), [1])
    assert weights["title_to_cover"] == 0.3 and weights["genre"] > 0  # the classifier is right here, zero-shot wrong
    assert set(weights["cover_to_title_by_weight"]) == {f"{w:g}" for w in HybridSettings().weight_grid}


def test_evaluation_chooses_the_fusion_weights_on_the_validation_books_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Spies on what each step receives: the weights see validation books, the report the test books."""
    import tasks.clip.evaluation as evaluation

    seen: dict[str, list[str]] = {}
    monkeypatch.setattr(evaluation, "load_local_classifier", lambda folder: object())
    monkeypatch.setattr(evaluation, "load_category_mapping", lambda path: {})
    monkeypatch.setattr(evaluation, "embed_texts", lambda bundle, texts, batch_size=0: np.zeros((len(texts), 2), np.float32))

    class Covers:
        def __init__(self, books: pd.DataFrame, shards: object) -> None:
            self.books = books

        def embeddings(self, bundle: object, batch_size: int) -> np.ndarray:
            return np.zeros((len(self.books), 2), np.float32)

    def signals(bundle: object, classifier: object, books: pd.DataFrame, *rest: object) -> SimpleNamespace:
        square = np.zeros((len(books), len(books)), np.float32)
        return SimpleNamespace(ids=books["book_id"].tolist(), clip={"title_to_cover": square}, text={"title_to_cover": square})

    monkeypatch.setattr(evaluation, "TestCovers", Covers)
    monkeypatch.setattr(evaluation, "book_signals", signals)
    monkeypatch.setattr(
        evaluation, "chosen_weights", lambda found, cfg, ks: seen.setdefault("chosen_on", found.ids) and {"title_to_cover": 1}
    )
    monkeypatch.setattr(
        evaluation, "hybrid_report", lambda found, weights, cfg, ks: seen.setdefault("reported_on", found.ids) and {}
    )
    from tasks.clip.data import with_splits
    from tasks.platform.settings import Settings

    labeled = pd.DataFrame(
        {
            "book_id": [f"b{i}" for i in range(400)],
            "caption": "c",
            "image_path": "x.jpg",
            "categories": "",
            "shard_row": range(400),
        }
    )
    pd.DataFrame({"image_path": ["x.jpg"], "text": ["read"]}).to_parquet(tmp_path / "text.parquet")
    settings = Settings().model_copy(
        update={"paths": Settings().paths.model_copy(update={"cover_text": tmp_path / "text.parquet"})}
    )
    splits = with_splits(labeled, 0.15, 0.15)
    test = splits[splits["split"] == "test"].reset_index(drop=True)
    report, scores = evaluation.hybrid_evaluation(settings, object(), splits, None, test, np.zeros((len(test), 2), np.float32))
    split_of = dict(zip(splits["book_id"], splits["split"]))
    assert seen["chosen_on"] and {split_of[b] for b in seen["chosen_on"]} == {"val"}
    assert {split_of[b] for b in seen["reported_on"]} == {"test"} and report["test_books"] == len(test)
    assert scores.shape == (len(test), len(test))


def test_one_image_shelved_in_several_folders_is_read_once(
    printed_covers: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "Other Category" / "0.jpg"
    copy.parent.mkdir()
    copy.write_bytes(printed_covers[0].read_bytes())
    reads: list[Path] = []
    original = CoverReader.read
    monkeypatch.setattr(CoverReader, "read", lambda self, source: reads.append(source) or original(self, source))
    frame = read_images([str(printed_covers[0]), str(printed_covers[1]), str(copy)], ReadingSettings(), IN_PROCESS)
    assert len(reads) == 2 == frame.attrs["distinct_images"] and frame["image_path"].tolist()[2] == str(copy)
    assert frame["text"][2] == frame["text"][0] != ""


def test_queries_skip_ngrams_most_documents_share_only_in_a_large_enough_collection() -> None:
    texts = ["the atlas", "the garden", "the kitchen", "the sea"]
    every = TextMatcher.from_texts(texts, common_share=0.5, common_min=1)  # "the" is in all four: skipped
    assert every.scores("the").tolist() == [0.0] * 4
    assert int(np.argmax(every.scores("the atlas"))) == 0
    small = TextMatcher.from_texts(texts, common_share=0.5, common_min=1000)  # four documents: nothing is skipped
    assert (small.scores("the") > 0).all()
