"""Drift reports for people: one self-contained HTML page (no scripts, styles or fonts fetched, so it
opens offline and as an MLflow artefact) and a short markdown table for a Prefect artifact.

Every piece of text is escaped: titles, file names and category labels come from uploads."""

from __future__ import annotations

import math
from html import escape

from tasks.monitor.drift import DriftReport, Measure

REFERENCE_COLOUR = "#4c78a8"
BATCH_COLOUR = "#f58518"
CHART_WIDTH = 440
CHART_HEIGHT = 170
PLOT_TOP = 24
PLOT_BOTTOM = 130
PLOT_LEFT = 36
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 70em; }
.verdict { font-size: 1.4em; font-weight: 600; padding: 0.5em 0.8em; border-radius: 6px; display: inline-block; }
.drift { background: #fde2e1; color: #a61b1b; } .ok { background: #e1f5e4; color: #1b6e2c; }
table { border-collapse: collapse; margin: 1em 0; } th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; } td.status-drift { color: #a61b1b; font-weight: 600; } td.status-ok { color: #1b6e2c; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5em; } .chart { width: 460px; } .chart h3 { font-size: 1em; margin: 0.2em 0; }
.summary { font-size: 0.85em; color: #555; margin: 0.2em 0; }
"""


def report_html(report: DriftReport, title: str, details: dict[str, str] | None = None) -> str:
    """The verdict first: most readers open the page to learn only that."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{escape(title)}</h1>", _verdict(report),
             f"<p>Reference: {report.reference_rows:,} rows &middot; batch: {report.batch_rows:,} rows</p>",
             _details(details or {}), _table(report), _rule(),
             '<div class="charts">', *(_chart_block(measure) for measure in report.measures), "</div>", "</body></html>"]
    return "\n".join(part for part in parts if part)


def report_markdown(report: DriftReport, title: str) -> str:
    """Short enough for a Prefect artifact: the verdict line and one row per measure."""
    counts = f"(reference {report.reference_rows:,} rows, batch {report.batch_rows:,} rows)"
    lines = [f"## {_cell(title)}", "", f"**Verdict: {_cell(report.verdict)}** {counts}", "",
             "| measure | group | effect | threshold | p-value | status |", "|---|---|---|---|---|---|"]
    lines += [f"| {_cell(m.name)} | {m.group} | {_number(m.effect)} | {_number(m.threshold)} | {_p_value(m)} | "
              f"{'**drift**' if m.drifted else 'ok'} |" for m in report.measures]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Markdown table cells: no pipes or line breaks, and no raw HTML if the viewer renders it."""
    return escape(str(text)).replace("|", "\\|").replace("\n", " ")


def _number(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}"


def _p_value(measure: Measure) -> str:
    if measure.p_value is None:
        return "n/a"
    return f"{measure.p_value:.2g}" + (f" (needs < {measure.alpha:.2g})" if measure.alpha is not None else "")


def _verdict(report: DriftReport) -> str:
    css = "drift" if report.drifted else "ok"
    return f'<p class="verdict {css}">{escape(report.verdict)}</p>'


def _details(details: dict[str, str]) -> str:
    if not details:
        return ""
    rows = "".join(f"<tr><th>{escape(str(key))}</th><td>{escape(str(value))}</td></tr>" for key, value in details.items())
    return f"<table>{rows}</table>"


def _table(report: DriftReport) -> str:
    head = "<tr><th>measure</th><th>group</th><th>test</th><th>effect</th><th>threshold</th><th>p-value</th><th>status</th></tr>"
    rows = [f"<tr><td>{escape(m.name)}</td><td>{escape(m.group)}</td><td>{escape(m.test)}</td><td>{_number(m.effect)}</td>"
            f"<td>&ge; {_number(m.threshold)}</td><td>{escape(_p_value(m))}</td>"
            f'<td class="status-{"drift" if m.drifted else "ok"}">{"drift" if m.drifted else "ok"}</td></tr>'
            for m in report.measures]
    return "<table>" + head + "".join(rows) + "</table>"


def _rule() -> str:
    return ("<p class=\"summary\">A measure with a p-value drifts when that p-value is below the Bonferroni-corrected "
            "level shown AND its effect reaches the threshold (numeric: Wasserstein distance / reference std; "
            "categorical: Jensen-Shannon distance, base 2). Embeddings drift when a classifier tells batch from "
            "reference with a cross-validated ROC AUC at or above the threshold.</p>")


def _chart_block(measure: Measure) -> str:
    return (f'<div class="chart"><h3>{escape(measure.name)} &mdash; {"drift" if measure.drifted else "ok"}</h3>'
            f'<p class="summary">reference: {escape(_summary(measure.reference))}<br>batch: {escape(_summary(measure.batch))}</p>'
            f"{_svg_bars(measure)}</div>")


def _summary(summary: dict[str, float]) -> str:
    return ", ".join(f"{key} {int(value):,}" if key == "rows" else f"{key} {_number(value)}" for key, value in summary.items()) or "n/a"


def _svg_bars(measure: Measure) -> str:
    """Reference and batch shares side by side per bin: the shape of a shift, not just its size."""
    labels = [str(label) for label in measure.histogram.get("labels", [])]
    reference, batch = measure.histogram.get("reference", []), measure.histogram.get("batch", [])
    open_tag = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" role="img" '
                f'aria-label="{escape(measure.name)}: reference vs batch shares" font-size="9" font-family="sans-serif">')
    if not labels:
        return f'{open_tag}<text x="{PLOT_LEFT}" y="{CHART_HEIGHT // 2}">no data to chart</text></svg>'
    top = max([*reference, *batch, 1e-9])
    slot = (CHART_WIDTH - PLOT_LEFT - 8) / len(labels)
    parts = [open_tag, _legend(), _axis(top)]
    for i, label in enumerate(labels):
        x = PLOT_LEFT + i * slot
        parts.append(_bar(x + slot * 0.1, slot * 0.4, reference[i], top, REFERENCE_COLOUR, f"{label}: reference {reference[i]:.1%}"))
        parts.append(_bar(x + slot * 0.5, slot * 0.4, batch[i], top, BATCH_COLOUR, f"{label}: batch {batch[i]:.1%}"))
        short = label if len(label) <= max(int(slot / 5), 3) else label[: max(int(slot / 5) - 1, 2)] + "…"
        parts.append(f'<text x="{x + slot / 2:.1f}" y="{PLOT_BOTTOM + 12}" text-anchor="middle">'
                     f"<title>{escape(label)}</title>{escape(short)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _bar(x: float, width: float, share: float, top: float, colour: str, tooltip: str) -> str:
    height = (PLOT_BOTTOM - PLOT_TOP) * share / top
    return (f'<rect x="{x:.1f}" y="{PLOT_BOTTOM - height:.1f}" width="{width:.1f}" height="{height:.1f}" fill="{colour}">'
            f"<title>{escape(tooltip)}</title></rect>")


def _axis(top: float) -> str:
    return (f'<line x1="{PLOT_LEFT}" y1="{PLOT_BOTTOM}" x2="{CHART_WIDTH - 8}" y2="{PLOT_BOTTOM}" stroke="#999"/>'
            f'<text x="{PLOT_LEFT - 4}" y="{PLOT_TOP + 4}" text-anchor="end">{top:.0%}</text>'
            f'<text x="{PLOT_LEFT - 4}" y="{PLOT_BOTTOM}" text-anchor="end">0%</text>')


def _legend() -> str:
    return (f'<rect x="{PLOT_LEFT}" y="4" width="10" height="10" fill="{REFERENCE_COLOUR}"/>'
            f'<text x="{PLOT_LEFT + 14}" y="13">reference</text>'
            f'<rect x="{PLOT_LEFT + 80}" y="4" width="10" height="10" fill="{BATCH_COLOUR}"/>'
            f'<text x="{PLOT_LEFT + 94}" y="13">batch</text>')
