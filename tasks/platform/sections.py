"""Settings sections beyond the pipeline core: the data engine, the cover index's kind, new listings, new covers, drift.

Part of the one settings object (tasks/platform/settings.py builds it from params.yaml); kept in
their own module so that file stays about the stages, and so it can import `Section` without a cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):  # the base of every section, here so settings.py can import this module without a cycle
    model_config = ConfigDict(extra="forbid", frozen=True)


class MlflowSettings(Section):
    """The experiment every run is tracked in, and the registered models with their champion alias."""
    experiment: str = "book-covers"
    classifier_model_name: str = "book-genre-classifier"
    clip_model_name: str = "book-cover-clip"
    champion_alias: str = "champion"


class EngineSettings(Section):
    """Where the data stages' chunked work runs (tasks/platform/engine.py): a large listing's validation,
    cover probing, shard writing, index embedding. Not a DVC param: every engine writes the same bytes."""

    kind: Literal["dask", "none"] = "dask"   # dask: Prefect's DaskTaskRunner | none: in this process, no cluster
    cluster_address: str | None = None       # an existing Dask scheduler (tcp://host:8786); None: a local cluster
    local_workers: int = Field(0, ge=0)      # the local cluster's processes (1 thread each); 0: one per CPU core
    chunk_covers: int = Field(2000, ge=1)    # covers per task: seconds of work, against ~0.2 s a Prefect task run costs
    chunk_rows: int = Field(100_000, ge=1)   # listing rows per part; a listing of one part is validated in memory
    min_chunks: int = Field(2, ge=1)         # work of fewer chunks runs in this process: a local cluster takes seconds to start

    @field_validator("cluster_address")
    @classmethod
    def _scheduler_address(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"engine.cluster_address must be a scheduler address such as tcp://host:8786, got {value!r}")
        return value


class VectorIndexSettings(Section):
    """When and how the cover index becomes approximate (tasks/search/vectors.py).

    Exact search scans every row: exact, and a few milliseconds up to a few hundred thousand covers
    (3.2 ms p50 at 100 k, 36 ms at 1 M, `make bench-search`). Above `approximate_above` rows each
    modality also gets a FAISS inverted-file index whose candidates are re-scored exactly from the
    memory-mapped vectors, so the scores shown stay exact and only recall is approximate.
    """

    approximate_above: int = Field(250_000, ge=1)     # rows; at or below, exact search only
    codes: str = "SQ8"              # FAISS code per vector: SQ8 (1 byte a dimension) | PQ<m> (m bytes) | Flat
    lists: int = Field(0, ge=0)     # inverted lists; 0: the power of two nearest sqrt(rows)
    probes: int = Field(0, ge=0)    # lists scanned per query; 0: 4 x sqrt(lists) (recall@10 >= 0.95, bench-search-scale)
    rerank: int = Field(40, ge=1)   # candidates re-scored exactly from the vectors (random reads: at 10 M they are on disk)
    train_rows: int = Field(200_000, ge=1_000)   # sampled rows the lists and codes are trained on
    chunk_rows: int = Field(200_000, ge=1)       # rows embedded, written, read and added at a time: building never holds all vectors

    @field_validator("codes")
    @classmethod
    def _known_codes(cls, codes: str) -> str:
        if not (codes in {"SQ8", "SQ4", "SQfp16", "Flat"} or (codes.startswith("PQ") and codes[2:].isdigit())):
            raise ValueError(f"codes must be SQ8, SQ4, SQfp16, Flat or PQ<m> (e.g. PQ64), got {codes!r}")
        return codes


class ClassifySettings(Section):  # bookcovers classify: a new listing labeled by the classifier champion
    chunk_rows: int = Field(50_000, ge=1)
    output_dir: Path = Path("data/predictions")


class AddCoversSettings(Section):  # bookcovers add-covers: a new covers folder appended to the cover index
    batches_dir: Path = Path("data/added_covers")  # one folder per batch; the index_covers stage reads them too
    covers_format: Literal["auto", "bookdepository", "generic"] = "auto"


class ReadingSettings(Section):
    """The read_covers stage's reader (tasks/reading/reader.py): PP-OCRv4 through onnxruntime, offline.

    The defaults were chosen by `make bench-reading` on 400 real covers (README, "Reading covers"):
    the library's defaults (short side scaled to 736 px, angle classifier, batches of 6 lines) read
    no better than these at a fraction of the time.
    """

    detector_side: int = Field(288, ge=32, le=4096)    # the detector's input is scaled so this side ...
    detector_side_rule: Literal["min", "max"] = "min"  # ... is the short side (min: thumbnails scaled up) or the long one
    max_lines: int = Field(3, ge=0)                    # only the tallest lines are recognised (0: all); titles are big
    recognizer_batch: int = Field(1, ge=1)             # lines per recogniser run: batches pad every line to the widest
    angle_classifier: bool = False                     # also turn upside-down lines (a model run per line)
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)  # lines read with less confidence are dropped
    threads: int = Field(1, ge=1)                      # onnxruntime threads per reader (one reader per engine worker)


class HybridSettings(Section):
    """Cover search by CLIP and read text together (tasks/search/hybrid.py): a fused score
    `w x text match + (1 - w) x CLIP similarity` per cover, w per query kind.

    A weight left null is chosen on the validation books (never the test books) from `weight_grid`,
    by the evaluate stage for the model it judges and by index_covers for the model it indexes, and
    recorded in metrics/clip.json and the index's index.json; a number is used as it is.
    """

    title_text_weight: float | None = Field(None, ge=0.0, le=1.0)  # a title query: the title against the covers' read text
    cover_text_weight: float | None = Field(None, ge=0.0, le=1.0)  # a cover query: its read text against titles + authors
    genre_text_weight: float | None = Field(None, ge=0.0, le=1.0)  # a cover's genre: classifier on its read text vs zero-shot
    weight_grid: list[float] = Field(default=[round(0.1 * i, 1) for i in range(11)], min_length=1)
    candidates: int = Field(200, ge=1)                  # per signal, its best covers re-scored by both
    common_ngram_share: float = Field(0.02, gt=0.0, le=1.0)  # a query skips n-grams in more of the documents than this ...
    common_ngram_min: int = Field(1000, ge=0)                # ... and in more documents than this (short lists cost nothing)
    identify_min_score: float = Field(0.3, ge=0.0, le=1.0)  # a cover is identified as a book when its read text matches ...
    identify_margin: float = Field(0.1, ge=0.0, le=1.0)     # ... that book this well, and this much better than any other

    @field_validator("weight_grid")
    @classmethod
    def _weights(cls, grid: list[float]) -> list[float]:
        if any(not 0.0 <= w <= 1.0 for w in grid):
            raise ValueError(f"weight_grid holds weights between 0 and 1, got {grid}")
        return sorted(set(grid))


class MonitorSettings(Section):
    """Drift of a new batch against the champion's reference; a measure drifts when its test is
    significant *and* its effect is large, so big batches of the same data do not cry wolf."""

    p_value: float = Field(0.01, gt=0, lt=1)          # per report, Bonferroni-corrected over its measures
    numeric_effect: float = Field(0.1, gt=0)          # Wasserstein distance / the reference's std
    category_effect: float = Field(0.1, gt=0, le=1)   # Jensen-Shannon distance (base 2) of the two distributions
    embedding_auc: float = Field(0.75, gt=0.5, le=1)  # ROC AUC of a classifier telling batch covers from reference covers
    reference_rows: int = Field(20_000, ge=100)       # of the classifier champion's held-out test split
    reference_covers: int = Field(1_000, ge=50)       # of the indexed covers (decoded for the image measures)
    batch_sample_rows: int = Field(50_000, ge=100)    # of a classify output, sampled uniformly while it is streamed
    flag_at_measures: int = Field(1, ge=1)            # this many drifted measures flag the flow run ...
    on_drift: Literal["warn", "fail"] = "warn"        # ... as a completed run named "Drift" (warn) or a failed one
    retrain_on_drift: bool = False                    # a flagged run starts the book-covers-pipeline deployment
    reports_dir: Path = Path("data/monitoring")
    monitor_cron: str | None = None                   # e.g. "0 6 * * *": `make ui` schedules the monitor (new batches)
    retrain_cron: str | None = None                   # e.g. "0 3 * * 0": `make ui` schedules the whole pipeline

    @field_validator("monitor_cron", "retrain_cron")
    @classmethod
    def _five_fields(cls, cron: str | None) -> str | None:
        if cron is not None and len(cron.split()) != 5:
            raise ValueError(f"a cron schedule has five fields (minute hour day month weekday), got {cron!r}")
        return cron or None
