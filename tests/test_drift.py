"""Drift statistics and their report: a random sample of the same data must come out "no drift" at any
batch size, a real shift (one genre, another script, blank or landscape covers) must be named."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from tasks.monitor.drift import (
    DriftThresholds,
    categorical_drift,
    covers_drift,
    dominant_script,
    embedding_drift,
    image_features,
    listing_drift,
    numeric_drift,
    title_features,
)
from tasks.monitor.report import report_html, report_markdown

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LISTING_FILES = [SHARED_DATA / "amazon-books" / name for name in ("book30-listing-train-partial.csv", "book32-listing-extra.csv")]
LISTING_COLUMNS = ["asin", "filename", "image_url", "title", "author", "category_id", "category"]
COVERS = SHARED_DATA / "bookdepository-covers" / "book-covers"
TRAIN_ROWS, REFERENCE_ROWS = 12_000, 15_000
LATIN_TO_CYRILLIC = str.maketrans("abcdefghijklmnopqrstuvwxyz", "абцдефгхийклмнопкрстувшхыз")
COMMON_CJK = ("的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于"
              "起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明社"
              "水火山石田土木金地风雨雪云花草树林森海江河湖春夏秋冬东西南北红黄蓝白黑青绿书画诗词歌舞梦爱情灵魂光影星空夜晨城市乡村园故传历史界命间记忆旅远少姑娘英雄王战争平")
THRESHOLDS = DriftThresholds()


def names(report: object) -> list[str]:
    return [measure.name for measure in report.drifted]


# --- scripts and title features ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "script"), [
    ("The Lord of the Rings", "latin"), ("Café au lait", "latin"), ("Война и мир", "cyrillic"), ("ノルウェイの森", "cjk"),
    ("三体", "cjk"), ("Οδύσσεια", "greek"), ("ألف ليلة وليلة", "arabic"), ("שלום", "hebrew"), ("한국어 문법", "hangul"),
    ("", "none"), (None, "none"), ("1984", "none"), ("2001: Война", "cyrillic"),
])
def test_dominant_script(text: str | None, script: str) -> None:
    assert dominant_script(text) == script


def test_title_features_count_characters_words_script_and_missing_authors() -> None:
    frame = pd.DataFrame({"title": ["Война и мир", "  Two  words ", None, "三体"], "author": ["Tolstoy", "", None, np.nan]})
    features = title_features(frame)
    assert features["title_chars"].tolist() == [11, 13, 0, 2]
    assert features["title_words"].tolist() == [3, 2, 0, 1]
    assert features["script"].tolist() == ["cyrillic", "latin", "none", "cjk"]
    assert features["author_missing"].tolist() == [False, True, True, True]


# --- synthetic statistics ---------------------------------------------------------------------------------------------

def test_numeric_same_distribution_is_no_drift_and_a_one_std_shift_is() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(10, 2, 5000)
    assert not numeric_drift("x", "inputs", reference, rng.normal(10, 2, 1000), THRESHOLDS).drifted
    shifted = numeric_drift("x", "inputs", reference, rng.normal(12, 2, 500), THRESHOLDS)
    assert shifted.drifted and 0.8 < shifted.effect < 1.2


def test_huge_samples_need_an_effect_not_just_a_p_value() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(0, 1, 100_000)
    assert not numeric_drift("x", "inputs", reference, rng.normal(0, 1, 100_000), THRESHOLDS, tests_in_report=6).drifted
    tiny = numeric_drift("x", "inputs", reference, rng.normal(0.05, 1, 100_000), THRESHOLDS, tests_in_report=6)
    assert tiny.p_value < tiny.alpha, "the shift is real and the test sees it ..."
    assert tiny.effect < THRESHOLDS.numeric_effect and not tiny.drifted, "... but it is too small to matter"


def test_constant_nan_and_empty_numeric_inputs_do_not_raise() -> None:
    same = numeric_drift("x", "inputs", np.full(100, 3.0), np.full(50, 3.0), THRESHOLDS)
    assert same.effect == 0 and not same.drifted
    moved = numeric_drift("x", "inputs", np.full(100, 3.0), np.full(50, 5.0), THRESHOLDS)
    assert moved.effect == pytest.approx(2.0) and moved.drifted
    empty = numeric_drift("x", "inputs", np.arange(100.0), np.array([np.nan, np.inf]), THRESHOLDS)
    assert np.isnan(empty.effect) and not empty.drifted and empty.p_value is None
    assert numeric_drift("x", "inputs", np.r_[np.arange(100.0), np.nan], np.arange(100.0), THRESHOLDS).reference["rows"] == 100


def test_categorical_same_shares_is_no_drift_and_a_category_only_in_the_batch_drifts() -> None:
    rng = np.random.default_rng(2)
    reference = pd.Series(rng.choice(["latin", "none", "greek"], 5000, p=[0.95, 0.04, 0.01]))
    assert not categorical_drift("script", "inputs", reference, pd.Series(rng.choice(["latin", "none", "greek"], 1000,
                                                                                     p=[0.95, 0.04, 0.01])), THRESHOLDS).drifted
    batch = pd.Series(["latin"] * 400 + ["cyrillic"] * 100)
    new = categorical_drift("script", "inputs", reference, batch, THRESHOLDS)
    assert new.drifted
    shares = dict(zip(new.histogram["labels"], zip(new.histogram["reference"], new.histogram["batch"])))
    assert shares["cyrillic"] == (0.0, 0.2)
    one = categorical_drift("script", "inputs", pd.Series(["latin"] * 10), pd.Series(["latin"] * 3), THRESHOLDS)
    assert (one.effect, one.p_value, one.drifted) == (0.0, 1.0, False)


def test_embedding_drift_same_gaussian_is_chance_and_a_shift_is_found() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(600, 32))
    same = embedding_drift("emb", reference, rng.normal(size=(400, 32)), THRESHOLDS)
    assert 0.4 < same.effect < 0.6 and not same.drifted
    moved = embedding_drift("emb", reference, rng.normal(0.5, 1, size=(400, 32)), THRESHOLDS)
    assert moved.effect > 0.9 and moved.drifted
    few = embedding_drift("emb", reference, rng.normal(size=(10, 32)), THRESHOLDS)
    assert np.isnan(few.effect) and not few.drifted and "too few" in few.test


def listing_frame(titles: list[str], genre: str = "Romance") -> pd.DataFrame:
    return pd.DataFrame({"title": titles, "author": ["A. Writer"] * len(titles), "genre": genre,
                         "probability": np.linspace(0.3, 0.9, len(titles))})


def test_an_empty_batch_is_an_error_not_a_clean_bill() -> None:
    reference = listing_frame(["A title"] * 50)
    with pytest.raises(ValueError, match="empty batch"):
        listing_drift(reference, reference.iloc[:0], THRESHOLDS)
    images = pd.DataFrame({"width": [300.0] * 30, "height": [450.0] * 30})
    unreadable = pd.DataFrame({"width": [np.nan] * 5, "height": [np.nan] * 5})
    with pytest.raises(ValueError, match="empty batch"):
        covers_drift(images, unreadable, thresholds=THRESHOLDS)


def test_report_as_dict_is_strict_json() -> None:
    reference = listing_frame([f"Title number {i}" for i in range(60)])
    report = listing_drift(reference, listing_frame([f"Other {i}" for i in range(30)], genre="Travel"), THRESHOLDS)
    plain = json.loads(json.dumps(report.as_dict(), allow_nan=False))
    assert plain["verdict"] == report.verdict and len(plain["measures"]) == 6


# --- the report -------------------------------------------------------------------------------------------------------

def test_report_html_is_escaped_offline_and_charts_every_measure() -> None:
    hostile = "<script>alert(1)</script>"
    reference = listing_frame([f"A quiet title {i}" for i in range(200)])
    report = listing_drift(reference, listing_frame([hostile] * 100, genre=hostile), THRESHOLDS)
    assert "genre" in names(report)
    page = report_html(report, title=f"Drift {hostile}", details={"model": hostile, hostile: "v3"})
    assert "<script" not in page and "&lt;script&gt;" in page
    assert report.verdict in page and 'class="verdict drift"' in page
    assert page.count("<svg") == len(report.measures)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    markdown = report_markdown(report, title="Nightly drift")
    assert f"**Verdict: {report.verdict}**" in markdown and markdown.count("\n| ") == len(report.measures) + 1


# --- real listings ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RealListings:
    model: object
    reference: pd.DataFrame  # held-out rows with the model's genre and probability
    pool: pd.DataFrame  # further held-out rows (title, author, category) that batches are drawn from

    def predicted(self, rows: pd.DataFrame) -> pd.DataFrame:
        probabilities = self.model.predict_proba(rows["title"])
        return rows.assign(genre=self.model.classes_[probabilities.argmax(axis=1)], probability=probabilities.max(axis=1))


@pytest.fixture(scope="module")
def real() -> RealListings:
    missing = [str(path) for path in LISTING_FILES if not path.is_file()]
    if missing:
        pytest.skip(f"real book32 listings absent (../shared/data): {missing}")
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline

    books = pd.concat([pd.read_csv(path, header=None, names=LISTING_COLUMNS, encoding="latin-1", dtype=str,
                                   keep_default_na=False, na_values=[""]) for path in LISTING_FILES], ignore_index=True)
    books = books.dropna(subset=["title"]).sample(frac=1.0, random_state=0).reset_index(drop=True)
    train, reference, pool = books[:TRAIN_ROWS], books[TRAIN_ROWS:TRAIN_ROWS + REFERENCE_ROWS], books[TRAIN_ROWS + REFERENCE_ROWS:]
    model = make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2),
                          SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=30, tol=1e-3, random_state=0))
    model.fit(train["title"], train["category"])
    return RealListings(model, RealListings(model, reference, pool).predicted(reference), pool)


@pytest.mark.shared_data
@pytest.mark.parametrize("rows", [200, 2000, 5000])
def test_a_random_held_out_batch_of_real_listings_is_no_drift(real: RealListings, rows: int) -> None:
    batch = real.predicted(real.pool.sample(rows, random_state=rows))
    assert listing_drift(real.reference, batch, THRESHOLDS).verdict == "no drift"


@pytest.mark.shared_data
def test_a_batch_of_one_genre_drifts_on_genre(real: RealListings) -> None:
    top = real.pool["category"].value_counts().index[0]
    report = listing_drift(real.reference, real.predicted(real.pool[real.pool["category"] == top]), THRESHOLDS)
    assert "genre" in names(report)


def cjk_titles(lengths: np.ndarray, seed: int) -> list[str]:
    characters = sorted(set(COMMON_CJK))
    assert len(characters) >= 200
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(characters, size=max(int(n), 1))) for n in lengths]


@pytest.mark.shared_data
@pytest.mark.parametrize("script", ["cyrillic", "cjk"])
def test_a_batch_in_another_script_drifts_on_title_script(real: RealListings, script: str) -> None:
    rows = real.pool.sample(500, random_state=7)
    titles = (rows["title"].str.lower().str.translate(LATIN_TO_CYRILLIC) if script == "cyrillic"
              else cjk_titles(rows["title"].str.len().to_numpy(), seed=7))
    batch = real.predicted(rows.assign(title=list(titles)))
    assert title_features(batch)["script"].value_counts().index[0] == script
    assert "title script" in names(listing_drift(real.reference, batch, THRESHOLDS))


# --- covers -----------------------------------------------------------------------------------------------------------

def cover_like(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A flat background, a title block and text-like stripes: what most covers are, to a statistic."""
    width, height = size
    image = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    top = int(rng.integers(0, height // 2))
    draw.rectangle([0, top, width, top + int(rng.integers(40, 120))], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    ink = tuple(int(c) for c in rng.integers(0, 256, 3))
    for y in range(int(rng.integers(10, 40)), height - 20, int(rng.integers(18, 40))):
        draw.rectangle([20, y, 20 + int(rng.integers(width // 4, width - 40)), y + int(rng.integers(4, 10))], fill=ink)
    return image


def cover_sizes(rng: np.random.Generator, count: int) -> list[tuple[int, int]]:
    widths = rng.integers(270, 331, count)
    return [(int(w), int(w * rng.uniform(1.45, 1.55))) for w in widths]


def photo_like(rng: np.random.Generator) -> Image.Image:
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    return coarse.resize((640, 480), Image.Resampling.BICUBIC)


def saved(images: list[Image.Image], folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(folder / f"{i:04d}.jpg") for i in range(len(images))]
    for image, path in zip(images, paths):
        image.save(path, quality=85)
    return paths


@pytest.fixture(scope="module", params=["synthetic", "real"])
def covers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """Reference 300 covers, batch A 100 more of the same, B 100 blank white ones, C 100 landscape photos."""
    folder, rng = tmp_path_factory.mktemp(f"covers-{request.param}"), np.random.default_rng(11)
    if request.param == "real":
        files = sorted(COVERS.glob("*/*.jpg")) if COVERS.is_dir() else []
        if len(files) < 400:
            pytest.skip(f"real cover images absent (../shared/data): {COVERS}")
        chosen = [str(files[i]) for i in rng.choice(len(files), 400, replace=False)]
        reference, batch_a = image_features(chosen[:300]), image_features(chosen[300:])
    else:
        reference = image_features(saved([cover_like(rng, s) for s in cover_sizes(rng, 300)], folder / "reference"))
        other = np.random.default_rng(12)
        batch_a = image_features(saved([cover_like(other, s) for s in cover_sizes(other, 100)], folder / "a"))
    sizes = reference[["width", "height"]].dropna().astype(int).sample(100, replace=True, random_state=1).to_numpy()
    batch_b = image_features(saved([Image.new("RGB", (int(w), int(h)), "white") for w, h in sizes], folder / "b"))
    batch_c = image_features(saved([photo_like(rng) for _ in range(100)], folder / "c"))
    return {"reference": reference, "a": batch_a, "b": batch_b, "c": batch_c}


def test_more_covers_of_the_same_kind_are_no_drift(covers: dict[str, pd.DataFrame]) -> None:
    assert covers_drift(covers["reference"], covers["a"], thresholds=THRESHOLDS).verdict == "no drift"


def test_blank_white_covers_drift_on_brightness_and_contrast(covers: dict[str, pd.DataFrame]) -> None:
    drifted = names(covers_drift(covers["reference"], covers["b"], thresholds=THRESHOLDS))
    assert {"image brightness", "image contrast"} <= set(drifted)
    assert "image aspect ratio" not in drifted, "same sizes as the reference"


def test_landscape_photos_drift_on_aspect_ratio(covers: dict[str, pd.DataFrame]) -> None:
    assert "image aspect ratio" in names(covers_drift(covers["reference"], covers["c"], thresholds=THRESHOLDS))


def test_covers_drift_adds_embeddings_and_listing_measures_when_given(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    images = image_features(saved([cover_like(rng, s) for s in cover_sizes(rng, 60)], tmp_path))
    books = listing_frame([f"A book {i}" for i in range(60)])
    report = covers_drift(images.iloc[:40], images.iloc[40:], rng.normal(size=(40, 8)), rng.normal(size=(20, 8)),
                          books.iloc[:40], books.iloc[40:], THRESHOLDS)
    measured = [measure.name for measure in report.measures]
    assert measured[6] == "cover embeddings" and {"title script", "genre", "genre probability"} <= set(measured)
    assert report.measures[0].alpha == pytest.approx(THRESHOLDS.p_value / 12)


def test_image_features_never_raise_on_a_bad_file(tmp_path: Path) -> None:
    broken, png = tmp_path / "broken.jpg", tmp_path / "really-a-png.jpg"
    broken.write_bytes(b"not an image at all")
    Image.new("RGBA", (100, 150), (255, 0, 0, 255)).save(png, format="PNG")
    frame = image_features([str(broken), str(png), str(tmp_path / "missing.jpg")])
    assert frame.iloc[[0, 2]].isna().all().all()
    assert frame.iloc[1][["width", "height"]].tolist() == [100.0, 150.0] and frame.iloc[1]["saturation"] == pytest.approx(1.0)
