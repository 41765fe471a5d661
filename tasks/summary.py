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
    metric = metrics["select_metric"]
    lines = [f"  selected {metrics['selected']} by CV {metric}; held-out test ({metrics['test_rows']} books): "
             f"accuracy {metrics['test']['accuracy']:.3f}, macro-F1 {metrics['test']['f1_macro']:.3f}"]
    for name, result in metrics["candidates"].items():
        lines.append(f"    {name:24s} CV acc {result['cv']['accuracy_mean']:.3f}  CV macro-F1 {result['cv']['f1_macro_mean']:.3f}  "
                     f"test acc {result['test']['accuracy']:.3f}  {result['fit_seconds']:.1f}s")
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
    clip = _read(folder / "clip.json")
    sections = [("Rows", _rows(validation) if validation else []),
                ("Classifier", _classifier(classifier) if classifier else []),
                ("CLIP recall@k", _clip(clip) if clip else []),
                ("MLflow registry", _registry(settings, classifier, clip))]
    return "\n".join(f"{title}:\n" + "\n".join(lines) for title, lines in sections if lines)


if __name__ == "__main__":
    print(render_summary(load_settings()))
