"""`add-covers` on a tiny index: new covers appended and found at once, nothing added twice, every bad
input of the corpus quarantined or refused without a crash or a lost row."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest
import torch
from bad_inputs import COVER_CASES, COVERS_CSV, Case, jpeg_bytes, write
from test_cover_search import GENRES, TEMPLATE, FixedGenre

from flows.bookcovers import main
from tasks.clip.model import initial_bundle, load_saved_clip, save_bundle
from tasks.genre.labeling import make_captions
from tasks.platform.engine import IN_PROCESS
from tasks.platform.errors import InputFileError
from tasks.platform.sections import VectorIndexSettings
from tasks.platform.settings import ClipSettings, SmallClipSettings, ValidateSettings
from tasks.search.additions import AddedBatch, add_to_index, covers_file, validated_covers
from tasks.search.engine import CoverSearch
from tasks.search.index import CoverEmbedder, IndexRows, added_batches, append_batch, embed_in_chunks, save_index
from tasks.search.vectors import ApproximateVectors, ExactVectors

CHECKS = ValidateSettings()


class Settingsish:
    """The sections `validated_covers` reads."""

    def __init__(self) -> None:
        from tasks.platform.sections import AddCoversSettings
        from tasks.platform.settings import RuntimeSettings

        self.add_covers, self.validate_, self.engine, self.runtime = AddCoversSettings(), CHECKS, IN_PROCESS, RuntimeSettings()


def generated_books(tiny_data, count: int) -> pd.DataFrame:  # noqa: ANN001  GeneratedData
    """The first `count` distinct books of the generated covers, as the labeling stage leaves them (genres cycled)."""
    covers = pd.read_csv(tiny_data.covers_csv).drop_duplicates("name").head(count)
    root = tiny_data.covers_csv.parent
    return pd.DataFrame({
        "book_id": covers["isbn"].astype(str), "title": covers["name"], "author": covers["author"].fillna(""),
        "genre": [GENRES[i % 3] for i in range(len(covers))], "category": covers["category"],
        "image_path": [str(root / p.replace("dataset/", "book-covers/")) for p in covers["img_paths"]],
    }).reset_index(drop=True)


def write_tiny_index(folder: Path, books: pd.DataFrame, version: str) -> dict[str, object]:
    """`books` embedded by a tiny random-init CLIP into an index folder, as index_covers leaves it; its index.json."""
    torch.set_num_threads(1)
    cfg = ClipSettings(model="small", device="cpu", small=SmallClipSettings(image_size=32, patch_size=8, hidden_size=32, layers=1,
                                                                            heads=2, projection_dim=32, vocab_size=300, max_text_tokens=16))
    captions = make_captions(books, TEMPLATE).tolist()
    bundle = initial_bundle(cfg, captions, None, torch.device("cpu"))
    folder.mkdir(parents=True)
    save_bundle(bundle, folder / "clip")
    images, texts, ok = embed_in_chunks(bundle, books, captions)
    assert ok.all()
    with IndexRows(folder, images.shape[1]) as rows:
        rows.append(books, images, texts)
        return save_index(rows, {"model": "book-cover-clip", "version": version, "uri": "x", "alias": "champion"}, TEMPLATE,
                          VectorIndexSettings())


@pytest.fixture(scope="module")
def base_index(tmp_path_factory: pytest.TempPathFactory, tiny_data) -> Path:
    """20 generated covers indexed by a tiny random-init CLIP, as index_covers leaves it."""
    folder = tmp_path_factory.mktemp("index") / "cover_index"
    write_tiny_index(folder, generated_books(tiny_data, 20), "3")
    return folder


def rebuilt_from(base_index: Path, folder: Path) -> IndexRows:
    """A new index folder holding the base index's rows, copied as an add copies them, still open for more."""
    shutil.copytree(base_index / "clip", folder / "clip")
    rows = IndexRows(folder, np.load(base_index / "images.npy", mmap_mode="r").shape[1])
    rows.append_index(base_index, chunk_rows=7)
    return rows


@pytest.fixture()
def index(base_index: Path, tmp_path: Path) -> Path:
    shutil.copytree(base_index, tmp_path / "cover_index")
    return tmp_path / "cover_index"


def new_covers(root: Path, rows: list[tuple[str, str, str]], colors: int = 0) -> Path:
    """A generic covers folder: title,author,image with the images beside the CSV."""
    for i, (_, _, name) in enumerate(rows):
        write(root / "img" / name, jpeg_bytes((64, 96), color=((40 * i + colors) % 256, 90, 200)))
    lines = ["title,author,image"] + [",".join('"' + c.replace('"', '""') + '"' for c in (t, a, f"img/{n}")) for t, a, n in rows]
    write(root / "covers.csv", ("\n".join(lines) + "\n").encode("utf-8"))
    return root


def add(index: Path, folder: Path, batches: Path, vector_settings: VectorIndexSettings | None = None) -> AddedBatch:
    csv = covers_file(folder)
    outcome, covers_format = validated_covers(csv, Settingsish())  # type: ignore[arg-type]
    record = AddedBatch("", str(csv), covers_format, outcome.rows_in, len(outcome.kept), len(outcome.quarantined))
    add_to_index(index, batches, csv, outcome, record, lambda: (FixedGenre(), "7"), vector_settings or VectorIndexSettings())
    assert record.rows_in == record.rows_kept + record.rows_quarantined
    return record


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


ODD = [("Paris by Night", "Ana Lee", "with space.jpg"), ("Le Voyage", "Jean Dupont", 'quote"d.jpg'),
       ("Time: A History", "R. Roe", "co:lon.jpg"), ("Naïve 書", "李白", "naïve 書.jpg")]


def test_new_covers_are_appended_labeled_and_found_by_a_running_search_at_once(index: Path, tmp_path: Path) -> None:
    search = CoverSearch(index, FixedGenre(), "a book cover of {category}")
    before = len(search.books)
    record = add(index, new_covers(tmp_path / "new", ODD), tmp_path / "batches")
    assert (record.books_new, record.covers_indexed, record.index_covers) == (4, 4, before + 4)
    assert record.classifier_version == "7" and record.clip_version == "3" and not record.already_added
    info = json.loads((index / "index.json").read_text())
    assert info["covers"] == before + 4 and info["batches"] == [{"id": record.batch, "covers": 4}]
    assert info["version"] == "3" and info["caption_template"] == TEMPLATE
    books = pd.read_parquet(index / "books.parquet")
    assert books["title"].tail(4).tolist() == [t for t, _, _ in ODD]
    assert books["genre"].tail(4).tolist() == ["Travel", "History", "History", "History"]  # FixedGenre: "Paris..." is Travel
    assert np.load(index / "images.npy").shape == np.load(index / "captions.npy").shape == (before + 4, 32)
    hit_titles = {hit.title for hit in search.by_title("Paris by Night", k=before + 4).hits}
    assert {t for t, _, _ in ODD} <= hit_titles and len(search.books) == before + 4
    new_row = np.load(index / "images.npy")[before]
    assert search._top(search.images, new_row, None, 0.0, 1)[0].title == "Paris by Night"


def test_an_approximate_index_grows_its_faiss_files_without_retraining_and_finds_the_new_covers(
        base_index: Path, tmp_path: Path) -> None:
    approximate = VectorIndexSettings(approximate_above=10, codes="Flat", train_rows=1_000, chunk_rows=1_000)
    index = tmp_path / "cover_index"
    info = json.loads((base_index / "index.json").read_text())
    with rebuilt_from(base_index, index) as rows:
        plan = save_index(rows, {k: info[k] for k in ("model", "version", "uri", "alias")}, TEMPLATE, approximate)["approximate"]
    for name in ("images.npy", "captions.npy"):
        np.testing.assert_array_equal(np.load(index / name), np.load(base_index / name))
    assert plan == {"factory": "IVF1,Flat", "lists": 1, "probes": 1, "rerank": 40}
    search = CoverSearch(index, FixedGenre(), "a book cover of {category}")
    assert isinstance(search.images, ApproximateVectors) and isinstance(search.captions, ApproximateVectors)
    before = len(search.books)
    record = add(index, new_covers(tmp_path / "new", ODD), tmp_path / "batches", approximate)
    info = json.loads((index / "index.json").read_text())
    assert record.covers_indexed == 4 and info["covers"] == before + 4 and info["approximate"] == plan
    assert [faiss.read_index(str(index / f"{name}.faiss")).ntotal for name in ("images", "captions")] == [before + 4] * 2
    assert search.refresh() and len(search.books) == before + 4  # what every query does first
    new_row = np.load(index / "images.npy")[before]
    assert search._top(search.images, new_row, None, 0.0, 1)[0].title == "Paris by Night"
    exact = ExactVectors(np.load(index / "images.npy"))
    for row in np.load(index / "captions.npy"):
        np.testing.assert_array_equal(search.images.top(row, 5)[0], exact.top(row, 5)[0])


def test_the_same_folder_twice_adds_nothing_and_books_already_indexed_are_skipped(index: Path, tmp_path: Path) -> None:
    folder = new_covers(tmp_path / "new", ODD)
    first = add(index, folder, tmp_path / "batches")
    after_first = digests(index)
    again = add(index, folder, tmp_path / "batches")
    assert again.already_added and again.covers_indexed == 0 and digests(index) == after_first
    copy = new_covers(tmp_path / "copy", [(t, a, f"other {i}.jpg") for i, (t, a, _) in enumerate(ODD)], colors=7)
    same_books = add(index, copy, tmp_path / "batches")
    assert (same_books.books_already_indexed, same_books.books_new, same_books.covers_indexed) == (4, 0, 0)
    assert digests(index) == after_first
    assert [batch_id for batch_id, _ in added_batches(tmp_path / "batches")] == [first.batch]
    assert first.batch.startswith("0001-")


def test_a_rebuild_from_the_batches_gives_the_incremental_index(index: Path, base_index: Path, tmp_path: Path) -> None:
    add(index, new_covers(tmp_path / "a", ODD[:2]), tmp_path / "batches")
    second = add(index, new_covers(tmp_path / "b", ODD[2:], colors=3), tmp_path / "batches")
    assert second.batch.startswith("0002-")
    bundle = load_saved_clip(base_index / "clip", "cpu")
    rebuilt = tmp_path / "rebuilt"
    info = json.loads((index / "index.json").read_text())
    with rebuilt_from(base_index, rebuilt) as base:
        for batch_id, batch in added_batches(tmp_path / "batches"):
            append_batch(base, CoverEmbedder(bundle), batch, batch_id, TEMPLATE)
        assert save_index(base, {k: info[k] for k in ("model", "version", "uri", "alias")}, TEMPLATE, VectorIndexSettings()) == info
    pd.testing.assert_frame_equal(pd.read_parquet(rebuilt / "books.parquet"), pd.read_parquet(index / "books.parquet"))
    for name in ("images.npy", "captions.npy"):
        np.testing.assert_allclose(np.load(rebuilt / name), np.load(index / name), atol=1e-6)


@pytest.mark.parametrize("case", COVER_CASES, ids=[case.name for case in COVER_CASES])
def test_every_bad_cover_input_is_quarantined_or_refused_without_a_lost_row(case: Case, index: Path, tmp_path: Path) -> None:
    case.build(tmp_path / "data")
    folder = (tmp_path / "data" / COVERS_CSV).parent
    if case.expect == "refused":
        with pytest.raises(InputFileError, match=case.message) as refused:
            add(index, folder, tmp_path / "batches")
        assert "\n" not in str(refused.value)
        return
    record = add(index, folder, tmp_path / "batches")
    quarantined = pd.read_csv(Path(record.folder) / "quarantine.csv") if record.folder else None
    assert record.rows_in == record.rows_kept + record.rows_quarantined
    if case.expect == "kept":
        assert record.rows_quarantined == 0 and record.covers_indexed == record.rows_kept == 3 + case.bad_rows
    else:
        assert record.rows_quarantined == case.bad_rows and record.covers_indexed == 3
        assert quarantined is not None and case.expect in ";".join(quarantined["reason"])


def test_a_folder_with_no_or_several_csvs_and_a_missing_folder_get_one_sentence(tmp_path: Path, capsys) -> None:
    with pytest.raises(InputFileError, match="found 0"):
        covers_file(tmp_path)
    (tmp_path / "a.csv").write_text("title,author,image\n")
    (tmp_path / "b.csv").write_text("title,author,image\n")
    with pytest.raises(InputFileError, match=r"found 2 \(a.csv, b.csv\)"):
        covers_file(tmp_path)
    assert covers_file(tmp_path / "a.csv") == tmp_path / "a.csv"
    with pytest.raises(SystemExit) as exit_code:
        main(["add-covers", str(tmp_path / "absent")])
    assert exit_code.value.code == 2 and "no such folder" in capsys.readouterr().err
