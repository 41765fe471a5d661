"""The short report `make run` ends with, read back from the metrics files DVC tracks."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.settings import Settings, load_settings


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _rows(validation: dict) -> list[str]:
    return [f"  {name:8s} {t['rows_in']:>7} in = {t['rows_kept']:>7} kept + {t['rows_quarantined']:>5} quarantined"
            + (f"  ({', '.join(f'{r}: {n}' for r, n in t['by_reason'].items())})" if t["by_reason"] else "")
            for name, t in validation.items()]


def _classifier(metrics: dict) -> list[str]:
    metric, test = metrics["select_metric"], metrics["test"]
    lines = [f"  {metrics['train_rows']} training rows, {metrics['genres']} genres ({metrics['label_set']}); selected "
             f"{metrics['selected']} by CV {metric}",
             f"  held-out test ({metrics['test_rows']} books): accuracy {test['accuracy']:.3f}, balanced accuracy "
             f"{test['balanced_accuracy']:.3f}, macro-F1 {test['f1_macro']:.3f}, calibration error {test.get('ece', 0):.3f}"]
    for name, result in metrics["candidates"].items():
        cv = result["cv"]
        lines.append(f"    {name:20s} CV acc {cv['accuracy_mean']:.3f}  bal.acc {cv['balanced_accuracy_mean']:.3f}  "
                     f"macro-F1 {cv['f1_macro_mean']:.3f}  {result['search_seconds'] + result['final_fit_seconds']:.1f}s")
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
    lines = [f"  test books: {metrics['test_books']}"]
    for direction in ("text_to_image", "image_to_text"):
        keys = sorted((k for k in metrics["base"] if k.startswith(direction)), key=lambda k: int(k.split("@")[1]))
        before = "/".join(f"{metrics['base'][k]:.2f}" for k in keys)
        after = "/".join(f"{metrics['finetuned'][k]:.2f}" for k in keys)
        lines.append(f"  {direction} R@{'/'.join(k.split('@')[1] for k in keys)}: base {before} -> fine-tuned {after}")
    lines.append(f"  zero-shot category accuracy: base {metrics['base']['zero_shot_category_accuracy']:.3f} "
                 f"-> fine-tuned {metrics['finetuned']['zero_shot_category_accuracy']:.3f}")
    return lines


def _registry(settings: Settings, classifier: dict, clip: dict) -> list[str]:
    lines = []
    for name, registry in ((settings.mlflow.classifier_model_name, classifier.get("registry")),
                           (settings.mlflow.clip_model_name, clip.get("registry"))):
        if registry:
            verdict = "promoted" if registry["promoted"] else "kept as challenger"
            lines.append(f"  {name}: v{registry['registered_version']} {verdict}; "
                         f"@{settings.mlflow.champion_alias} = v{registry['champion_version']}")
    return lines


def render_summary(settings: Settings) -> str:
    folder = settings.paths.metrics_dir
    validation, classifier = _read(folder / "validation.json"), _read(folder / "classifier.json")
    labeling, clip = _read(folder / "labeling.json"), _read(folder / "clip.json")
    sections = [("Rows", _rows(validation) if validation else []),
                ("Classifier", _classifier(classifier) if classifier else []),
                ("Labeling", _labeling(labeling) if labeling else []),
                ("CLIP recall@k", _clip(clip) if clip else []),
                ("MLflow registry", _registry(settings, classifier, clip))]
    return "\n".join(f"{title}:\n" + "\n".join(lines) for title, lines in sections if lines)


if __name__ == "__main__":
    print(render_summary(load_settings()))
