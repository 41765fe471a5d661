"""Drift between a reference (the data the models were checked on) and a batch (what they see now).

A measure drifts only when its test is significant (Bonferroni over the report) AND its effect is large:
a p-value alone flags trivia once batches are big, an effect alone flags noise when they are small.
The tests Evidently runs, on scipy and scikit-learn, without its dependency tree."""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from PIL import Image
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tasks.monitor.scripts import dominant_script
from tasks.reading.text_match import text_or_none

log = logging.getLogger(__name__)

NUMERIC_TEST = "Kolmogorov-Smirnov + Wasserstein/std"
CATEGORY_TEST = "chi-square + Jensen-Shannon"
EMBEDDING_TEST = "domain classifier ROC AUC"
HISTOGRAM_BINS = 10
TOP_CATEGORIES = 12
SUMMARY_CATEGORIES = 5
MIN_EMBEDDING_ROWS = 20
EMBEDDING_FOLDS = 5
IMAGE_MEASURES = {"width": "image width", "height": "image height", "aspect": "image aspect ratio",
                  "brightness": "image brightness", "contrast": "image contrast", "saturation": "image saturation"}

@dataclass(frozen=True)
class DriftThresholds:
    p_value: float = 0.01  # a measure drifts only if its test is significant at this level (Bonferroni over the report) ...
    numeric_effect: float = 0.1  # ... AND Wasserstein distance / reference std reaches this
    category_effect: float = 0.1  # ... categorical: Jensen-Shannon distance (base 2) between the shares
    embedding_auc: float = 0.75  # embeddings: cross-validated ROC AUC telling batch from reference (no p-value)


DEFAULT_THRESHOLDS = DriftThresholds()


@dataclass(frozen=True)
class Measure:
    name: str
    group: str  # "inputs" | "predictions" | "embeddings"
    test: str
    effect: float  # nan when there was nothing to compare
    threshold: float
    p_value: float | None
    drifted: bool
    reference: dict[str, float]
    batch: dict[str, float]
    histogram: dict[str, list]  # {"labels": [...], "reference": [shares], "batch": [shares]}, same bins for both
    alpha: float | None = None  # the Bonferroni-corrected level the p-value had to beat


@dataclass(frozen=True)
class DriftReport:
    measures: list[Measure]
    reference_rows: int
    batch_rows: int

    @property
    def drifted(self) -> list[Measure]:
        return [measure for measure in self.measures if measure.drifted]

    @property
    def verdict(self) -> str:
        names = [measure.name for measure in self.drifted]
        return "drift: " + ", ".join(names) if names else "no drift"

    def as_dict(self) -> dict:
        """Strict JSON (no NaN, no numpy scalars): MLflow, Prefect and browsers all read it."""
        return _plain({"verdict": self.verdict, "drifted": [m.name for m in self.drifted],
                       "reference_rows": self.reference_rows, "batch_rows": self.batch_rows,
                       "measures": [asdict(measure) for measure in self.measures]})


def _plain(value: object) -> object:
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(item) for item in value]
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def title_features(frame: pd.DataFrame) -> pd.DataFrame:
    """What a title -> genre model's inputs look like, in numbers a test can compare."""
    titles = frame["title"].fillna("").astype(str)
    author = frame["author"] if "author" in frame else pd.Series(None, index=frame.index, dtype=object)
    missing = (author.isna() | author.fillna("").astype(str).str.strip().eq("")).to_numpy()
    values = titles.tolist()  # plain Python loops beat a pandas regex count here (~1.5 s per million titles)
    return pd.DataFrame({"title_chars": titles.str.len().astype("int64").to_numpy(),
                         "title_words": np.fromiter((len(title.split()) for title in values), dtype=np.int64, count=len(values)),
                         "script": [dominant_script(title) for title in values],
                         "author_missing": missing}, index=frame.index)


def _is_significant(p_value: float, thresholds: DriftThresholds, tests_in_report: int) -> tuple[bool, float]:
    alpha = thresholds.p_value / max(tests_in_report, 1)
    return p_value < alpha, alpha


def _untested(name: str, group: str, test: str, threshold: float, summary: tuple, histogram: dict) -> Measure:
    """Nothing to compare is not evidence of drift: the report says so rather than guess."""
    return Measure(name, group, test, math.nan, threshold, None, False, *summary, histogram)


def numeric_drift(name: str, group: str, reference: np.ndarray, batch: np.ndarray,
                  thresholds: DriftThresholds = DEFAULT_THRESHOLDS, tests_in_report: int = 1) -> Measure:
    """KS says whether the distributions differ; Wasserstein in reference stds says by how much."""
    ref, new = _finite(reference), _finite(batch)
    summary, histogram = (_numeric_summary(ref), _numeric_summary(new)), _numeric_histogram(ref, new)
    if ref.size == 0 or new.size == 0:
        return _untested(name, group, f"{NUMERIC_TEST} (no rows to compare)", thresholds.numeric_effect, summary, histogram)
    p_value = float(ks_2samp(ref, new).pvalue)
    scale = float(ref.std()) or 1.0  # a constant reference: distance in the measure's own units
    effect = float(wasserstein_distance(ref, new)) / scale
    significant, alpha = _is_significant(p_value, thresholds, tests_in_report)
    return Measure(name, group, NUMERIC_TEST, effect, thresholds.numeric_effect, p_value,
                   significant and effect >= thresholds.numeric_effect, *summary, histogram, alpha)


def _finite(values: np.ndarray | pd.Series) -> np.ndarray:
    array = pd.to_numeric(pd.Series(np.asarray(values, dtype=object).ravel()), errors="coerce").to_numpy(float, na_value=np.nan)
    return array[np.isfinite(array)]


def _numeric_summary(values: np.ndarray) -> dict[str, float]:
    stats = {"mean": values.mean(), "std": values.std(), "median": np.median(values)} if values.size else {}
    return {"rows": float(values.size), **{key: float(value) for key, value in stats.items()}}


def _numeric_histogram(ref: np.ndarray, new: np.ndarray) -> dict[str, list]:
    """Bins over the reference's 1st-99th percentile, outliers clipped into the end bins."""
    basis = ref if ref.size else new
    if basis.size == 0:
        return {"labels": [], "reference": [], "batch": []}
    low, high = (float(v) for v in np.percentile(basis, [1, 99]))
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    labels = [f"{a:.3g}–{b:.3g}" for a, b in itertools.pairwise(edges)]
    return {"labels": labels, "reference": _bin_shares(ref, edges), "batch": _bin_shares(new, edges)}


def _bin_shares(values: np.ndarray, edges: np.ndarray) -> list[float]:
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), edges)
    return [float(c / counts.sum()) if counts.sum() else 0.0 for c in counts]


def categorical_drift(name: str, group: str, reference: pd.Series, batch: pd.Series,
                      thresholds: DriftThresholds = DEFAULT_THRESHOLDS, tests_in_report: int = 1) -> Measure:
    """Chi-square on the union of categories, so one seen only in the batch counts; Jensen-Shannon sizes it."""
    counts = pd.concat([_labels(reference).value_counts().rename("reference"),
                        _labels(batch).value_counts().rename("batch")], axis=1).fillna(0.0)
    summary, histogram = (_category_summary(counts["reference"]), _category_summary(counts["batch"])), _category_histogram(counts)
    if counts["reference"].sum() == 0 or counts["batch"].sum() == 0:
        return _untested(name, group, f"{CATEGORY_TEST} (no rows to compare)", thresholds.category_effect, summary, histogram)
    table = counts.to_numpy(dtype=float).T
    if table.shape[1] < 2:  # one category on both sides: nothing can have shifted
        p_value, effect = 1.0, 0.0
    else:
        p_value = float(chi2_contingency(table).pvalue)
        effect = float(jensenshannon(table[0] / table[0].sum(), table[1] / table[1].sum(), base=2))
    significant, alpha = _is_significant(p_value, thresholds, tests_in_report)
    return Measure(name, group, CATEGORY_TEST, effect, thresholds.category_effect, p_value,
                   significant and effect >= thresholds.category_effect, *summary, histogram, alpha)


def _labels(values: pd.Series) -> pd.Series:
    series = pd.Series(values, dtype=object)
    return series.where(series.notna(), "missing").astype(str)


def _category_summary(counts: pd.Series) -> dict[str, float]:
    top = counts.sort_values(ascending=False, kind="stable").head(SUMMARY_CATEGORIES)
    return {str(k): float(v / counts.sum()) for k, v in top.items() if v > 0}


def _category_histogram(counts: pd.DataFrame) -> dict[str, list]:
    """Top categories by the larger of their two shares, so one new in the batch gets its own bar."""
    shares = (counts / counts.sum().clip(lower=1)).astype(float)
    shares = shares.loc[shares.max(axis=1).sort_values(ascending=False, kind="stable").index]
    top, rest = shares.iloc[:TOP_CATEGORIES], shares.iloc[TOP_CATEGORIES:]
    if len(rest):
        top = pd.concat([top, rest.sum().to_frame("other").T])
    return {"labels": [str(k) for k in top.index], "reference": [float(v) for v in top["reference"]],
            "batch": [float(v) for v in top["batch"]]}


def embedding_drift(name: str, reference: np.ndarray, batch: np.ndarray,
                    thresholds: DriftThresholds = DEFAULT_THRESHOLDS, seed: int = 0, max_rows: int = 2000) -> Measure:
    """If a classifier can tell batch from reference, the embeddings moved: one test for every direction at once."""
    ref, new = _finite_rows(reference), _finite_rows(batch)
    rows = min(len(ref), len(new), max_rows)
    summary = ({"rows": float(len(ref))}, {"rows": float(len(new))})
    if rows < MIN_EMBEDDING_ROWS:
        return _untested(name, "embeddings", f"{EMBEDDING_TEST}: too few rows ({rows} per side, needs {MIN_EMBEDDING_ROWS})",
                         thresholds.embedding_auc, summary, {"labels": [], "reference": [], "batch": []})
    if ref.shape[1] != new.shape[1]:
        raise ValueError(f"embedding sizes differ: reference {ref.shape[1]}, batch {new.shape[1]}")
    rng = np.random.default_rng(seed)
    x = np.vstack([ref[rng.choice(len(ref), rows, replace=False)], new[rng.choice(len(new), rows, replace=False)]])
    y = np.r_[np.zeros(rows), np.ones(rows)]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(EMBEDDING_FOLDS, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(y, scores))
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    histogram = {"labels": [f"P(batch) {a:.1f}–{b:.1f}" for a, b in itertools.pairwise(edges)],
                 "reference": _bin_shares(scores[:rows], edges), "batch": _bin_shares(scores[rows:], edges)}
    test = f"{EMBEDDING_TEST} (logistic regression, {EMBEDDING_FOLDS}-fold CV, {rows} rows per side)"
    return Measure(name, "embeddings", test, auc, thresholds.embedding_auc, None, auc >= thresholds.embedding_auc,
                   *summary, histogram)


def _finite_rows(embeddings: np.ndarray) -> np.ndarray:
    array = np.asarray(embeddings, dtype=float)
    array = array.reshape(len(array), -1) if array.size else np.empty((0, 1))
    return array[np.isfinite(array).all(axis=1)]


def _listing_tests(reference: pd.DataFrame, batch: pd.DataFrame) -> int:
    """Four title and author measures, then predictions where both sides have them: raw listings get checked too."""
    return 4 + sum(column in reference and column in batch for column in ("genre", "probability", "read_text"))


def _listing_measures(reference: pd.DataFrame, batch: pd.DataFrame, thresholds: DriftThresholds, tests: int) -> list[Measure]:
    ref, new = title_features(reference), title_features(batch)
    measures = [numeric_drift("title length", "inputs", ref["title_chars"], new["title_chars"], thresholds, tests),
                numeric_drift("title words", "inputs", ref["title_words"], new["title_words"], thresholds, tests),
                categorical_drift("title script", "inputs", ref["script"], new["script"], thresholds, tests),
                categorical_drift("author missing", "inputs", ref["author_missing"], new["author_missing"], thresholds, tests)]
    if "genre" in reference and "genre" in batch:
        measures.append(categorical_drift("genre", "predictions", reference["genre"], batch["genre"], thresholds, tests))
    if "probability" in reference and "probability" in batch:
        measures.append(numeric_drift("genre probability", "predictions", reference["probability"], batch["probability"],
                                      thresholds, tests))
    if "read_text" in reference and "read_text" in batch:  # covers: the share the reader finds nothing on (scans, text-free art)
        measures.append(categorical_drift("no readable text", "inputs", text_or_none(reference["read_text"]),
                                          text_or_none(batch["read_text"]), thresholds, tests))
    return measures


def _require_rows(reference_rows: int, batch_rows: int) -> None:
    """An empty batch is a broken input upstream, not a batch without drift."""
    if batch_rows == 0:
        raise ValueError("empty batch")
    if reference_rows == 0:
        raise ValueError("empty reference")


def listing_drift(reference: pd.DataFrame, batch: pd.DataFrame, thresholds: DriftThresholds = DEFAULT_THRESHOLDS) -> DriftReport:
    """Listings with the classifier's genre and probability: did the titles change, did the predictions?"""
    _require_rows(len(reference), len(batch))
    report = DriftReport(_listing_measures(reference, batch, thresholds, _listing_tests(reference, batch)),
                         len(reference), len(batch))
    log.info("listing drift, %d reference vs %d batch rows: %s", len(reference), len(batch), report.verdict)
    return report


def image_features(paths: list[str], max_side: int = 64) -> pd.DataFrame:
    """Size, shape and tone of each cover from a small decode: scans or screenshots show here. Rows follow
    `paths`; an unreadable file is a row of NaN, so one bad upload never stops the check."""
    frame = pd.DataFrame([_image_row(str(path), max_side) for path in paths], columns=list(IMAGE_MEASURES), dtype=float)
    if unreadable := int(frame["width"].isna().sum()):
        log.warning("%d of %d images could not be read; their features are NaN", unreadable, len(frame))
    return frame


def _image_row(path: str, max_side: int) -> dict[str, float]:
    try:
        with Image.open(path) as image:
            width, height = image.size
            image.draft("RGB", (max_side, max_side))  # JPEG: decode at 1/2..1/8 scale, much faster
            small = image.convert("RGB")
        small.thumbnail((max_side, max_side))
        luminance = np.asarray(small.convert("L"), dtype=np.float32) / 255.0
        saturation = np.asarray(small.convert("HSV"), dtype=np.float32)[..., 1] / 255.0
    except Exception as error:  # noqa: BLE001  a broken file is a data point, not a crash
        log.debug("unreadable image %s: %s", path, error)
        return dict.fromkeys(IMAGE_MEASURES, math.nan)
    return {"width": float(width), "height": float(height), "aspect": width / height if height else math.nan,
            "brightness": float(luminance.mean()), "contrast": float(luminance.std()), "saturation": float(saturation.mean())}


def _cover_rows(images: pd.DataFrame, embeddings: np.ndarray | None, books: pd.DataFrame | None) -> tuple[int, int]:
    """(rows given, rows with something to compare): unreadable images alone do not make a batch."""
    readable = int(images.reindex(columns=list(IMAGE_MEASURES)).notna().any(axis=1).sum())
    others = [len(part) for part in (embeddings, books) if part is not None]
    return max([len(images), *others]), max([readable, *others])


def covers_drift(reference_images: pd.DataFrame, batch_images: pd.DataFrame,
                 reference_embeddings: np.ndarray | None = None, batch_embeddings: np.ndarray | None = None,
                 reference_books: pd.DataFrame | None = None, batch_books: pd.DataFrame | None = None,
                 thresholds: DriftThresholds = DEFAULT_THRESHOLDS, seed: int = 0) -> DriftReport:
    """Covers as pixels (image_features frames), as the model sees them (embeddings), and their listings."""
    with_embeddings = reference_embeddings is not None and batch_embeddings is not None
    with_books = reference_books is not None and batch_books is not None
    reference_rows, reference_usable = _cover_rows(reference_images, reference_embeddings if with_embeddings else None,
                                                   reference_books if with_books else None)
    batch_rows, batch_usable = _cover_rows(batch_images, batch_embeddings if with_embeddings else None,
                                           batch_books if with_books else None)
    _require_rows(reference_usable, batch_usable)
    tests = len(IMAGE_MEASURES) + (_listing_tests(reference_books, batch_books) if with_books else 0)
    measures = [numeric_drift(label, "inputs", reference_images.get(column, []), batch_images.get(column, []), thresholds, tests)
                for column, label in IMAGE_MEASURES.items()]
    if with_embeddings:
        measures.append(embedding_drift("cover embeddings", reference_embeddings, batch_embeddings, thresholds, seed))
    if with_books:
        measures += _listing_measures(reference_books, batch_books, thresholds, tests)
    report = DriftReport(measures, reference_rows, batch_rows)
    log.info("covers drift, %d reference vs %d batch rows: %s", reference_rows, batch_rows, report.verdict)
    return report
