"""`make plots` offline: `dvc plots show` with the project's template (config/plots_offline.html,
named in .dvc/config) writes a report that loads no script from the network, and in headless
Chromium every plot of dvc.yaml renders: each Vega plot draws its canvas, each PNG loads."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, needs_browser, screenshot_dir
from PIL import Image

# A few rows with the columns each stage writes (tasks/genre/report.py, tasks/clip/finetune.py, evaluation.py).
PLOT_ROWS = {
    "classifier_cv.csv": "candidate,metric,score\nnaive_bayes,cv_accuracy,0.71\nlinear_svm,cv_accuracy,0.74\n",
    "classifier_confusion.csv": "actual,predicted\nTravel,Travel\nTravel,History\nHistory,History\n",
    "classifier_per_class.csv": "genre,precision,recall,f1,support\nTravel,0.8,0.7,0.75,10\nHistory,0.6,0.7,0.65,12\n",
    "clip_loss.csv": "epoch,train_loss,val_loss,seconds,pairs_per_second\n1,4.1,4.0,20,400\n2,3.9,3.95,20,400\n",
    "clip_recall.csv": "metric,model,value\ntext_to_image_R@1,base,0.01\ntext_to_image_R@1,finetuned,0.03\n",
    "clip_title_similarity.csv": "cover,prompt,matches_cover,base,finetuned\nParis,Paris by X,True,0.1,0.3\nParis,Rome,False,0.1,0.0\n",
    "clip_learning_curve.csv": ("train_fraction,train_pairs,text_to_image_R@10,image_to_text_R@10,zero_shot_category_accuracy\n"
                                "0.1,80,0.02,0.02,0.1\n1.0,800,0.1,0.09,0.15\n"),  # bookcovers experiments
    "caption_experiment.csv": "trained on | queried with,text_to_image_R@10\ntitle-author | title_only,0.1\n",
}
VEGA_PLOTS = 9  # the 6 CSV plots of the stages + dvc.yaml's top-level 3: loss curves, caption experiment, learning curve
IMAGES = ("classifier_cv.png", "classifier_confusion.png", "clip_retrieval_gallery.png")


def plots_project(root: Path) -> Path:
    """A git + DVC repository with this project's dvc.yaml, params.yaml, .dvc/config and template, and plot files."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], cwd=root, check=True, env=env)
    shutil.copy(PROJECT_ROOT / ".dvc" / "config", root / ".dvc" / "config")
    for name in ("dvc.yaml", "params.yaml", "config/plots_offline.html"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / name, root / name)
    plots = root / "plots"
    plots.mkdir()
    for name, rows in PLOT_ROWS.items():
        (plots / name).write_text(rows)
    for name in IMAGES:
        Image.new("RGB", (120, 80), "teal").save(plots / name)
    return root


def show_plots(project: Path) -> Path:
    done = subprocess.run([str(Path(sys.executable).parent / "dvc"), "plots", "show", "--out", "dvc_plots"], cwd=project,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return project / "dvc_plots" / "index.html"


def test_the_template_inlines_every_script_and_dvc_uses_it(tmp_path: Path) -> None:
    template = (PROJECT_ROOT / "config" / "plots_offline.html").read_text(encoding="utf-8")
    assert "{plot_divs}" in template and "vega@5.20.2, vega-lite@5.2.0, vega-embed@6.18.2" in template
    assert "{scripts}" not in template  # where DVC would add its CDN <script src=...> tags
    report = show_plots(plots_project(tmp_path)).read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", report), "the report loads a script from elsewhere"
    assert report.count("vegaEmbed('#") == VEGA_PLOTS and report.count('<img src="static/') == len(IMAGES)


def test_a_checksum_mismatch_is_never_inlined() -> None:
    from tasks.platform.plots_offline import SCRIPTS, IntegrityError, script_text

    with pytest.raises(IntegrityError, match="npm published"):
        script_text(SCRIPTS[0], b"not the vega tarball")


@needs_browser
def test_every_plot_renders_offline_in_a_browser(tmp_path: Path, browser) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    report = show_plots(plots_project(tmp_path))
    browser.get(report.as_uri())
    vega_ids = re.findall(r"vegaEmbed\('#([^']+)'", report.read_text(encoding="utf-8"))
    drawn = ("return arguments[0].filter(id => document.querySelector('#' + id + ' canvas, #' + id + ' svg.marks')).length")
    WebDriverWait(browser, 60).until(lambda b: b.execute_script(drawn, vega_ids) == len(vega_ids))
    loaded = browser.execute_script("return [...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
    assert len(vega_ids) == VEGA_PLOTS and loaded == len(IMAGES)  # all 12 plots of dvc.yaml
    screenshots = screenshot_dir(tmp_path)
    browser.set_window_size(1280, 4000)
    assert browser.save_screenshot(str(screenshots / "plots_report.png"))
