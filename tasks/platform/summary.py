"""The short report `make run` ends with, read back from the metrics files DVC tracks."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.platform.outputs import write_json
from tasks.platform.settings import EMBEDDED, Settings

SKIPPED = "unchanged, skipped"


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _rows(validation: dict) -> list[str]:
    return [f"  {name:8s} {t['rows_in']:>7} in = {t['rows_kept']:>7} kept + {t['rows_quarantined']:>5} quarantined"
            + (f"  ({', '.join(f'{r}: {n}' for r, n in t['by_reason'].items())})" if t["by_reason"] else "")
            for name, t in validation.items() if name in ("listing", "covers")]


def _data(validation: dict, run: dict) -> list[str]:
    source = validation.get("data_source") or run.get("data_source")
    lines = []
    if source:
        lines.append("  the embedded generated data set" if source == EMBEDDED else f"  {source}")
    stages = run.get("stages", {})
    skipped = [name for name, status in stages.items() if status == SKIPPED]
    if skipped:
        ran = [name for name, status in stages.items() if status != SKIPPED]
        lines.append(f"  stages unchanged, skipped: {', '.join(skipped)}; ran: {', '.join(ran) or 'none'}")
    return lines


def _classifier(metrics: dict) -> list[str]:
    metric, test = metrics["select_metric"], metrics["test"]
    lines = [f"  {metrics['train_rows']} training rows, {metrics['genres']} genres ({metrics['label_set']}); selected "
             f"{metrics['selected']} by CV {metric}",
             f"  held-out test ({metrics['test_rows']} books): accuracy {test['accuracy']:.3f}, balanced accuracy "
             f"{test['balanced_accuracy']:.3f}, macro-F1 {test['f1_macro']:.3f}, calibration error {test.get('ece', 0):.3f}"]
    lines.append(f"    {'candidate':20s} {'CV bal.acc':>10s} {'test bal.acc':>12s} {'test acc':>8s} {'test F1':>7s} {'seconds':>8s}")
    for name, result in metrics["candidates"].items():
        cv, held_out = result["cv"], result.get("test", {})
        test_figures = " ".join(f"{held_out[key]:{width}.3f}" if key in held_out else f"{'-':>{width}s}"
                                for key, width in (("balanced_accuracy", 12), ("accuracy", 8), ("f1_macro", 7)))
        lines.append(f"    {name:20s} {cv['balanced_accuracy_mean']:10.3f} {test_figures} "
                     f"{result['search_seconds'] + result['final_fit_seconds']:7.1f}s")
    return lines


def _labeling(metrics: dict) -> list[str]:
    agreement = metrics["category_agreement"]
    top = ", ".join(f"{genre} {count}" for genre, count in list(metrics["genre_distribution"].items())[:3])
    lines = [f"  {metrics['books']} books labeled ({metrics['titles_per_second']:.0f} titles/s); most predicted: {top}"]
    if agreement["agreement"] is not None:
        lines.append(f"  predicted genre agrees with the cover's mapped category on {agreement['agreement']:.3f} "
                     f"of {agreement['books_with_mapping']} books")
    return lines


def _clip(metrics: dict) -> list[str]:
    chance = metrics.get("chance", {})
    lines = [f"  test books: {metrics['test_books']} (the gallery each query ranks; chance "
             + "/".join(f"{value:.3f}" for value in chance.values()) + f" at R@{'/'.join(k[2:] for k in chance)})" if chance
             else f"  test books: {metrics['test_books']}"]
    if metrics.get("base_model"):
        lines.append(f"  base: {metrics['base_model']}")
    for direction in ("text_to_image", "image_to_text"):
        keys = sorted((k for k in metrics["base"] if k.startswith(direction)), key=lambda k: int(k.split("@")[1]))
        before = "/".join(f"{metrics['base'][k]:.3f}" for k in keys)
        after = "/".join(f"{metrics['finetuned'][k]:.3f}" for k in keys)
        lines.append(f"  {direction} R@{'/'.join(k.split('@')[1] for k in keys)}: base {before} -> fine-tuned {after}")
    lines.append(f"  zero-shot category accuracy: base {metrics['base']['zero_shot_category_accuracy']:.3f} "
                 f"-> fine-tuned {metrics['finetuned']['zero_shot_category_accuracy']:.3f}")
    return lines


def _reading(metrics: dict) -> list[str]:
    return [f"  {metrics['covers']} covers read, {metrics['distinct_images']} distinct images ({metrics['images_per_second']:.1f} "
            f"images/s, {metrics['engine']}): {metrics['with_text']} with text, {metrics['no_text']} without, "
            f"{metrics['failed']} failed; {metrics['reader']}"]


def _hybrid(hybrid: dict) -> list[str]:
    """Read text, CLIP and their fusion on the test books, with the queries a user types (a title alone, a cover alone)."""
    weights = hybrid["weights"]
    lines = [f"  queries as typed: a title alone, a cover alone ({hybrid['test_books']} test books; fusion weights "
             f"{weights['title_to_cover']:g} / {weights['cover_to_title']:g} on the read text, chosen on {hybrid['chosen_on']})"]
    for direction in ("title_to_cover", "cover_to_title"):
        keys = sorted((k for k in hybrid["hybrid"] if k.startswith(direction)), key=lambda k: int(k.split("@")[1]))
        figures = ", ".join(f"{name} " + "/".join(f"{hybrid[name][k]:.3f}" for k in keys) for name in ("clip", "read_text", "hybrid"))
        lines.append(f"  {direction.replace('_', ' ')} R@{'/'.join(k.split('@')[1] for k in keys)}: {figures}")
    genre, named = hybrid["genre_from_cover"], hybrid["identification"]
    lines.append(f"  genre from a cover alone agrees with its mapped category on {genre['fused']:.3f} of "
                 f"{genre['books_with_mapped_category']} books (classifier on read text {genre['classifier_on_read_text']:.3f}, "
                 f"zero-shot {genre['zero_shot']:.3f}; weight {weights['genre']:g})")
    lines.append(f"  identified from the read text: {named['coverage']:.3f} of covers, {named['precision']:.3f} of them correctly")
    return lines


def _registry(settings: Settings, classifier: dict, clip: dict, champions: dict[str, str | None] | None) -> list[str]:
    """Each model's last verdict as the run recorded it, and its champion as the registry holds it now
    (`champions`; None where the registry could not be read, then the run's record, said as such)."""
    lines = []
    alias = settings.mlflow.champion_alias
    for name, registry in ((settings.mlflow.classifier_model_name, classifier.get("registry")),
                           (settings.mlflow.clip_model_name, clip.get("registry"))):
        if not registry:
            continue
        verdict = "promoted" if registry["promoted"] else "kept as challenger"
        if champions is None:
            recorded = registry["champion_version"]
            champion = ("none yet" if recorded in (None, "none") else f"v{recorded}") + " (as the run recorded it; the registry cannot be read now)"
        else:
            champion = "none yet" if champions.get(name) is None else f"v{champions[name]}"
        lines.append(f"  {name}: v{registry['registered_version']} {verdict}; @{alias} = {champion}")
        if not registry["promoted"] and registry.get("reason"):
            lines.append(f"    why: {registry['reason']}")
    return lines


def registry_champions(settings: Settings) -> dict[str, str | None] | None:
    """Each model's @champion version in the registry now; None when the registry cannot be read.

    A project with no local store yet has no champions (and reading must not create one)."""
    from tasks.platform.tracking import tracking_uri

    uri = tracking_uri()
    names = (settings.mlflow.classifier_model_name, settings.mlflow.clip_model_name)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return dict.fromkeys(names)
    from mlflow.exceptions import MlflowException

    from tasks.platform.registry import champion_version
    from tasks.platform.tracking import client

    try:
        store = client()
        store.search_registered_models(max_results=1)  # reachable at all? (an alias lookup error would read as "no champion")
        return {name: champion_version(store, name, settings.mlflow.champion_alias) for name in names}
    except (MlflowException, OSError):
        return None


def record_run(path: Path, data_source: str, results: dict[str, object]) -> None:
    """What the summary says about the last pipeline run beyond the metrics: the data it read, what it skipped."""
    stages = {name: SKIPPED if isinstance(result, dict) and result.get("skipped") else "ran"
              for name, result in results.items() if name != "dvc"}
    write_json(path, {"data_source": data_source, "stages": stages, "dvc": results.get("dvc")})


def render_summary(settings: Settings, champions: dict[str, str | None] | None = None) -> str:
    """The summary from metrics/; the champions from the registry (read here unless given)."""
    folder = settings.paths.metrics_dir
    validation, classifier = _read(folder / "validation.json"), _read(folder / "classifier.json")
    labeling, clip, reading = _read(folder / "labeling.json"), _read(folder / "clip.json"), _read(folder / "reading.json")
    sections = [("Data", _data(validation, _read(settings.paths.run_record))),
                ("Rows", _rows(validation) if validation else []),
                ("Classifier", _classifier(classifier) if classifier else []),
                ("Labeling", _labeling(labeling) if labeling else []),
                ("Reading", _reading(reading) if reading else []),
                ("CLIP recall@k", _clip(clip) if clip else []),
                ("Hybrid search (CLIP + read text)", _hybrid(clip["hybrid"]) if clip.get("hybrid") else []),
                ("MLflow registry", _registry(settings, classifier, clip,
                                              champions if champions is not None else registry_champions(settings)))]
    return "\n".join(f"{title}:\n" + "\n".join(lines) for title, lines in sections if lines)


# What each stage's row shows in the Prefect artifact: (label, path into the stage's result).
STAGE_FIGURES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "validate-clean": [("listing rows in", ("listing", "rows_in")), ("kept", ("listing", "rows_kept")),
                       ("quarantined", ("listing", "rows_quarantined")), ("covers kept", ("covers", "rows_kept")),
                       ("covers quarantined", ("covers", "rows_quarantined"))],
    "train-classifier": [("selected", ("selected",)), ("test balanced accuracy", ("test", "balanced_accuracy")),
                         ("test accuracy", ("test", "accuracy")), ("version", ("registry", "registered_version")),
                         ("promoted", ("registry", "promoted"))],
    "label-covers": [("books", ("books",)), ("classifier version", ("model_version",)),
                     ("agreement with cover category", ("category_agreement", "agreement"))],
    "shard-covers": [("covers written", ("written",)), ("failed", ("failed",)), ("px", ("image_size",)),
                     ("covers/s", ("covers_per_second",))],
    "finetune-clip": [("processes", ("processes",)), ("best epoch", ("best_epoch",)), ("best val loss", ("best_val_loss",)),
                      ("version", ("registered_version",)), ("resumed from step", ("resumed_from_step",))],
    "evaluate-clip": [("mean recall base", ("base", "mean_recall")), ("mean recall fine-tuned", ("finetuned", "mean_recall")),
                      ("hybrid title->cover R@10", ("hybrid", "hybrid", "title_to_cover_R@10")),
                      ("promoted", ("registry", "promoted")), ("champion", ("registry", "champion_version"))],
    "read-covers": [("covers", ("covers",)), ("distinct images read", ("distinct_images",)), ("with text", ("with_text",)),
                    ("failed", ("failed",)), ("images/s", ("images_per_second",))],
    "index-covers": [("covers indexed", ("covers",)), ("CLIP version", ("version",)),
                     ("with read text", ("covers_with_read_text",))],
}


def _figure(result: dict, path: tuple[str, ...]) -> object:
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return "–"
        result = result[key]
    return f"{result:.4f}" if isinstance(result, float) else result


def mlflow_run_link(run_id: str | None, tracking_uri: str, experiment_id: str | None) -> str:
    """A link into the MLflow UI where there is a server; the run id where the store is a local file."""
    if not run_id:
        return "–"
    if tracking_uri.startswith(("http://", "https://")) and experiment_id:
        return f"[{run_id[:8]}]({tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id})"
    return f"`{run_id}`"


def stage_table_markdown(results: dict[str, dict], tracking_uri: str, experiment_id: str | None) -> str:
    """The Prefect artifact of a pipeline run: each stage's key figures and its MLflow run."""
    # The run link comes before the figures: a long last column is what a narrow artifact page cuts off.
    lines = ["# Pipeline run", "", "| stage | MLflow run | key figures |", "|---|---|---|"]
    for stage, result in results.items():
        if not isinstance(result, dict):
            lines.append(f"| {stage} | – | {result} |")
            continue
        if result.get("skipped"):
            lines.append(f"| {stage} | – | {SKIPPED} (inputs, params and code as in dvc.lock) |")
            continue
        figures = "; ".join(f"{label} {_figure(result, path)}" for label, path in STAGE_FIGURES.get(stage, []))
        lines.append(f"| {stage} | {mlflow_run_link(result.get('mlflow_run_id'), tracking_uri, experiment_id)} | {figures or '–'} |")
    return "\n".join(lines) + "\n"
