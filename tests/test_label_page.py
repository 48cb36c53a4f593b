"""The labelling page in a real headless browser (Debian's Chromium and ChromeDriver, driven by Selenium): it loads,
plays a window's audio, labels windows by keyboard and by button, and the labels are in the database and in the
exported CSV at once."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.archive_audio import make_archive

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOT = os.environ.get("LABEL_PAGE_SCREENSHOT")  # where to keep the page's picture (docs/label_page.png)

# CI installs them (.ci/run) and must run this test; elsewhere a machine without them skips it
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(DRIVER).exists()) and not os.environ.get("CI"),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)")


@pytest.fixture(scope="module")
def page_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from archive.build import build_archive
    from archive.database import open_archive
    from archive.search import example_vectors, parse_example, search_examples, write_hits
    from archive.database import settings_of
    from archive.window_embedders import load_window_embedder

    base = tmp_path_factory.mktemp("page")
    paths = make_archive(base / "archive")
    db_path = base / "db"
    build_archive(paths["root"], db_path, "birdnet", workers=1)
    db = open_archive(db_path)
    settings = settings_of(db)
    vecs = example_vectors(load_window_embedder(settings.model), settings, parse_example(str(paths["query"])))
    hits = search_examples(db, [vecs], ["whistle"], top=6)
    write_hits(hits, settings, base / "hits")
    db.db.close()
    return db_path, base / "hits" / "hits.csv"


@pytest.fixture()
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_page_plays_and_labels_into_the_database(page_db, browser, tmp_path):
    from selenium.webdriver.common.by import By

    from archive.database import open_archive
    from archive.label_page import LabelSession, serve
    from archive.labels import labels_frame

    db_path, hits = page_db
    session = LabelSession(db_path, hits, classes=["whistle"], annotator="browser-test")
    server = serve(session, port=0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        browser.get(url)
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".row"), what="the queue")
        first = session.queue.iloc[0]
        assert f"window {first.window_id}" in browser.find_element(By.ID, "title").text
        wait_for(lambda: browser.execute_script(
            "const i = document.getElementById('spectrogram'); return i.complete && i.naturalWidth > 0"),
            what="the spectrogram")
        # play the window's audio: the browser decodes the WAV and its clock moves
        browser.find_element(By.TAG_NAME, "body").send_keys(" ")
        wait_for(lambda: browser.execute_script("return document.getElementById('player').currentTime > 0.2"),
                 what="the audio to play")
        assert browser.execute_script("return document.getElementById('player').duration") > 2.5
        # keyboard: p = positive for the selected class, then the page moves to the next window
        browser.find_element(By.TAG_NAME, "body").send_keys("p")
        wait_for(lambda: len(labels_frame(open_archive(db_path, readonly=True))) == 1, what="the first label")
        second = session.queue.iloc[1]
        wait_for(lambda: f"window {second.window_id}" in browser.find_element(By.ID, "title").text,
                 what="the next window")
        browser.find_element(By.ID, "negative").click()  # the mouse does the same
        wait_for(lambda: len(labels_frame(open_archive(db_path, readonly=True))) == 2, what="the second label")
        browser.find_element(By.TAG_NAME, "body").send_keys("s")
        wait_for(lambda: len(labels_frame(open_archive(db_path, readonly=True))) == 3, what="the skip")
        wait_for(lambda: "whistle: 1+ 1− 1?" in browser.find_element(By.ID, "status").text, what="the counts")
        if SCREENSHOT:
            browser.find_element(By.TAG_NAME, "body").send_keys("kkk")  # back to the whistle for the picture
            time.sleep(0.5)
            Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(SCREENSHOT)
        # the database, as another process would read it (nothing waits for the page to close)
        labels = labels_frame(open_archive(db_path, readonly=True)).set_index("window_id")
        assert labels.loc[first.window_id, "kind"] == "positive"
        assert labels.loc[second.window_id, "kind"] == "negative"
        assert set(labels["annotator"]) == {"browser-test"}
        # the export link: the csv source's table
        export = browser.execute_script(
            "return fetch('/api/export').then(r => r.text())")
        out = tmp_path / "labels.csv"
        out.write_text(export)
        table = pd.read_csv(out)
        assert list(table.columns) == ["path", "label", "start", "end", "group"]
        assert sorted(table["label"]) == ["background", "whistle"]
        row = table[table["label"] == "whistle"].iloc[0]
        assert row["group"] == first.file and row["start"] == first.start_s
    finally:
        server.shutdown()
