"""The search page in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`)
driven by Selenium loads the page, submits a title, and sees covers appear; it saves a screenshot.

Skipped, with the reason, where the browser is not installed (`make browser` installs it)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_browser, screenshot_dir
from test_cover_search import FixedGenre, index  # noqa: F401  (fixture reused)
from test_hybrid_search import Classifier, hybrid_index  # noqa: F401  (fixture reused)

pytestmark = needs_browser


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serving(search: object) -> Iterator[str]:
    """The page over `search` on a free local port, for as long as the test runs."""
    import uvicorn

    from tasks.search.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(search), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the search page did not start"
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture()
def page_url(index: Path) -> Iterator[str]:  # noqa: F811
    from tasks.search.engine import CoverSearch

    yield from serving(CoverSearch(index, FixedGenre(), "a book cover of {category}", low_confidence_below=0.3))


@pytest.fixture()
def hybrid_page_url(hybrid_index: Path) -> Iterator[str]:  # noqa: F811
    from tasks.platform.sections import HybridSettings
    from tasks.search.engine import CoverSearch

    yield from serving(CoverSearch(hybrid_index, Classifier(), "a book cover of {category}", low_confidence_below=0.3,
                                   hybrid=HybridSettings(identify_min_score=0.4, identify_margin=0.05)))


def test_a_title_typed_in_the_page_shows_its_genre_and_covers(page_url: str, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page_url)
    browser.find_element(By.ID, "title").send_keys("Paris in spring")
    browser.find_element(By.ID, "search").click()
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#results img.cover")) == 5)
    wait.until(lambda b: b.execute_script("return [...document.querySelectorAll('#results img.cover')].every(i => i.complete && i.naturalWidth > 0)"))
    assert browser.find_element(By.ID, "genre").text == "Genre: Travel (predicted, p = 0.75)"
    screenshots = screenshot_dir(tmp_path)
    shot = screenshots / "search_page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    browser.find_element(By.ID, "title").clear()
    browser.find_element(By.ID, "search").click()
    wait.until(lambda b: b.find_element(By.ID, "message").text == "type a book title to search for")
    assert browser.find_elements(By.CSS_SELECTOR, "#results img.cover") == []

    browser.find_element(By.ID, "title").send_keys("Xqzzv blorp")
    browser.find_element(By.ID, "search").click()
    wait.until(lambda b: "low confidence" in b.find_element(By.ID, "genre").text)
    assert browser.find_element(By.ID, "genre").get_attribute("class") == "guess"


def test_an_uploaded_cover_is_shown_beside_its_genre_and_closest_titles(page_url: str, browser, tmp_path: Path) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    cover = tmp_path / "my cover.png"
    Image.new("RGB", (60, 90), "navy").save(cover)
    browser.get(page_url)
    browser.find_element(By.ID, "cover").send_keys(str(cover))
    browser.find_element(By.ID, "classify").click()
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.find_element(By.ID, "genre").text.startswith("Genre: "))
    uploaded = browser.find_element(By.CSS_SELECTOR, "#results #uploaded img")
    wait.until(lambda b: b.execute_script("const i = document.querySelector('#uploaded img'); return i.complete && i.naturalWidth === 60"))
    assert uploaded.get_attribute("alt") == "your cover"
    assert browser.find_element(By.CSS_SELECTOR, "#uploaded figcaption").text == "your cover: my cover.png"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#results figure")) == 1 + 5  # the upload, then the closest titles

    browser.find_element(By.ID, "labels").send_keys("Romance, Travel, Cookbooks")
    browser.find_element(By.ID, "classify").click()
    wait.until(lambda b: b.find_element(By.ID, "genre").text.startswith("Your labels: "))
    assert sorted(part.rsplit(" ", 1)[0] for part in browser.find_element(By.ID, "genre").text[13:].split(", ")) == [
        "Cookbooks", "Romance", "Travel"]


def test_an_uploaded_cover_that_prints_its_title_is_identified(hybrid_page_url: str, hybrid_index: Path, browser,  # noqa: F811
                                                               tmp_path: Path) -> None:
    import pandas as pd
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    book = pd.read_parquet(hybrid_index / "books.parquet").iloc[1]
    cover = tmp_path / "upload.jpg"
    cover.write_bytes(Path(book["image_path"]).read_bytes())
    browser.get(hybrid_page_url)
    browser.find_element(By.ID, "cover").send_keys(str(cover))
    browser.find_element(By.ID, "classify").click()
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.find_element(By.ID, "identified").text.startswith("This looks like "))
    assert browser.find_element(By.ID, "identified").text == (f"This looks like {book['title']} by {book['author']} "
                                                              f"(its genre: {book['genre']})")
    assert browser.find_element(By.ID, "read").text.startswith("Read on the cover: ")
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#results img.cover")) == 5)  # the closest titles' covers
    first = browser.find_elements(By.CSS_SELECTOR, "#results figure figcaption")[1].text
    assert first.startswith(book["title"]) and "found by read text" in first
    shot = screenshot_dir(tmp_path) / "search_page_identified.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
