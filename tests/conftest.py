"""Shared fixtures: quiet offline environment, a tiny generated data set, an isolated project folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

for _name, _value in {
    "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "GIT_PYTHON_REFRESH": "quiet",
}.items():
    os.environ.setdefault(_name, _value)

from tasks.inputs.synthetic import GeneratedData, generate_dataset  # noqa: E402
from tasks.platform.settings import Settings, load_settings  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
SHARED_MODELS = PROJECT_ROOT.parent / "shared" / "models"
CATEGORY_MAPPING = PROJECT_ROOT / "config" / "category_mapping.yaml"

# A pipeline small enough for seconds, not minutes: 6 genres, 160 covers, a tiny random-init CLIP (tests of the
# towers model set clip.model=towers themselves).
TINY_OVERRIDES = [
    "clip.model=small",
    "clip.weight_decay=0.1",
    "classifier.cv_folds=3",
    "classifier.random_forest_trees=20",
    "classifier.n_jobs=1",
    "classifier.distill_titles=300",
    "clip.epochs=2",
    "clip.batch_size=16",
    "clip.small.image_size=32",
    "clip.small.patch_size=8",
    "clip.small.hidden_size=32",
    "clip.small.heads=2",
    "clip.small.projection_dim=32",
    "clip.small.vocab_size=400",
    "engine.kind=none",
]


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server for every test that runs flows in-process (~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> GeneratedData:
    return generate_dataset(tmp_path_factory.mktemp("raw"), listing_rows=600, cover_books=160, seed=1, genres=6)


@pytest.fixture()
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder as cwd, with its own MLflow database: no test sees another's registry."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def tiny_overrides(data: GeneratedData) -> list[str]:
    return [f"data.root={data.listing_csv.parents[1]}", f"labeling.category_mapping={CATEGORY_MAPPING}", *TINY_OVERRIDES]


@pytest.fixture()
def tiny_settings(project_dir: Path, tiny_data: GeneratedData) -> Settings:
    return load_settings(project_dir / "params.yaml", tiny_overrides(tiny_data))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                   reason="chromium and chromium-driver are not installed (`make browser`)")


def headless_chromium() -> object:
    """A Selenium driver on Debian's headless Chromium (only where `needs_browser` does not skip)."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)


def screenshot_dir(tmp_path: Path) -> Path:
    """Where browser tests save their screenshots: $BOOKCOVERS_SCREENSHOT_DIR when set (for notes), else tmp."""
    folder = Path(os.environ.get("BOOKCOVERS_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture()
def browser() -> Iterator[object]:
    pytest.importorskip("selenium.webdriver")
    driver = headless_chromium()
    yield driver
    driver.quit()
