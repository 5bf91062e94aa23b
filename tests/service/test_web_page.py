"""The web page in a real headless Chromium against the real service with live (replayed Ped2) streams: the stream
list shows its state and a camera thumbnail, the score timeline is filled from the replay buffer on open and then
with provisional and final points, category bars appear, and recent events show their stream, category, peak,
snapshot and a clip that plays. What the page draws is checked on screenshots, not only in the DOM."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.footage import PED2_ROOT
from tests.reliability.conftest import wait_for
from tests.service.conftest import wait_event_with_snapshot
from tests.service.live.service_process import API_KEY, ServiceProcess

pytestmark = pytest.mark.integration

EVENTS_CLIP = str(PED2_ROOT / "testing" / "frames" / "02")
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

webdriver = pytest.importorskip("selenium.webdriver")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("web")
    proc = ServiceProcess(root / "data", root / "service.log").start()
    with proc.client() as client:
        url = str(PED2_ROOT / "testing" / "frames" / "04")
        assert (
            client.post("/streams", json={"url": url, "name": "lobby cam", "loop": True}).status_code == 201
        )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def finished_event(service: ServiceProcess) -> dict:
    """An event of a "dock cam" stream (thresholds of 0: every score is an anomaly), ended by removing the
    stream, with its clip ready."""
    always = {"enter_threshold": 0.0, "exit_threshold": 0.0, "min_duration_s": 0.0}
    with service.client() as client:
        sid = client.post("/streams", json={"url": EVENTS_CLIP, "name": "dock cam", "events": always}).json()[
            "id"
        ]
        event = wait_event_with_snapshot(client, sid, 40)
        time.sleep(3.0)
        assert client.delete(f"/streams/{sid}").status_code == 204
        # Closed (its final peak and categories stored) and its clip finished.
        return wait_for(
            lambda: (
                (e := client.get(f"/events/{event['id']}").json())["clip_status"] == "ready"
                and e["status"] == "closed"
                and e
            ),
            30,
            "the event closed with its clip",
        )


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def _wait_for(driver, script: str, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(
        f"timed out waiting for {what}; page status: {driver.find_element('id', 'status').text!r}"
    )


def test_page_shows_the_stream_and_a_live_timeline(service: ServiceProcess, browser) -> None:
    driver = browser
    driver.get(f"{service.base}/ui/")
    # Without a key the API refuses, and the page says so.
    _wait_for(
        driver, "return document.querySelector('#status').textContent.includes('API key')", 10, "auth error"
    )
    driver.find_element("id", "api-key").send_keys(API_KEY)
    driver.find_element("css selector", "#key-form button").click()
    _wait_for(
        driver,
        "return [...document.querySelectorAll('#streams tbody tr')].some(r => r.textContent.includes('lobby cam')"
        " && r.querySelector('.state-live'))",
        20,
        "the stream listed as live",
    )
    canvas = "document.querySelector('#timeline')"
    first = int(
        _wait_for(
            driver, f"return +{canvas}.dataset.lastIndex >= 0 && {canvas}.dataset.lastIndex", 30, "a point"
        )
    )
    later = int(
        _wait_for(
            driver,
            f"return +{canvas}.dataset.lastIndex >= {first + 2} && +{canvas}.dataset.finals >= 2 && "
            f"{canvas}.dataset.lastIndex",
            30,
            "the timeline to advance",
        )
    )
    assert later >= first + 2
    bars = driver.execute_script("return document.querySelectorAll('#categories .bar').length")
    with service.client() as client:
        categories = client.get("/ready").json()["model"]["category_names"]
    assert bars == len(categories)  # one bar per category of the served model
    assert "score" in driver.find_element("id", "live-info").text
    # The key persists for the next visit.
    assert driver.execute_script("return localStorage.getItem('refinevad.apiKey')") == API_KEY


def _image(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def test_page_shows_thumbnails_a_replayed_timeline_and_events_with_clips(
    service: ServiceProcess, finished_event: dict, browser
) -> None:
    driver = browser
    driver.set_window_size(1400, 1400)
    with service.client() as client:
        lobby = next(v for v in client.get("/streams").json()["items"] if v["name"] == "lobby cam")
        # Enough history that a timeline filled only by new messages would look different.
        wait_for(
            lambda: client.get(f"/streams/{lobby['id']}").json()["snippets_processed"] >= 8, 40, "history"
        )
        snapshot = _image(client.get(f"/events/{finished_event['id']}/snapshot.jpg").content)
    driver.get(f"{service.base}/ui/")
    driver.find_element("id", "api-key").send_keys(API_KEY)
    driver.find_element("css selector", "#key-form button").click()
    canvas = "document.querySelector('#timeline')"
    # The timeline is filled from the replay buffer at once: many points with the first messages. The replayed
    # messages arrive one WebSocket frame each (a loaded machine may show the first alone), but 6 new snippets
    # would take 9.6 s at 10 fps, so 6 points within 5 s of the first are the replay.
    _wait_for(driver, f"return +{canvas}.dataset.points > 0", 20, "points")
    points = int(
        _wait_for(driver, f"return +{canvas}.dataset.points >= 6 && {canvas}.dataset.points", 5, "6")
    )
    assert points >= 6, points
    timeline = _image(driver.find_element("id", "timeline").screenshot_as_png)
    blue = np.all(np.abs(timeline.astype(int) - (0xD8, 0x6F, 0x3B)) < 40, axis=2)  # BGR of #3b6fd8
    assert blue.sum() > 200  # the score line and its points are drawn

    # The camera thumbnail shows a real frame.
    thumb = "document.querySelector('#streams tbody tr img.thumb')"
    _wait_for(
        driver, f"return {thumb} && {thumb}.complete && {thumb}.naturalWidth === 360", 20, "a thumbnail"
    )
    shot = _image(driver.find_element("css selector", "#streams tbody tr img.thumb").screenshot_as_png)
    assert shot.shape[0] >= 70 and float(shot.std()) > 10

    # The event row: stream name, category, peak and snapshot (the same picture the API serves).
    row = f"document.querySelector('#events tbody tr[data-id=\"{finished_event['id']}\"]')"
    _wait_for(
        driver, f"return {row} && {row}.querySelector('img.thumb').naturalWidth > 0", 20, "the event row"
    )
    element = driver.find_element("css selector", f"#events tbody tr[data-id='{finished_event['id']}']")
    assert element.find_element("css selector", ".stream-name").text == "dock cam"
    assert element.find_element("css selector", ".category").text == finished_event["dominant_category"]
    assert element.find_element("css selector", ".peak").text == f"{finished_event['peak_score']:.3f}"
    shown = _image(element.find_element("css selector", "img.thumb").screenshot_as_png)
    expected = cv2.resize(snapshot, (shown.shape[1], shown.shape[0]), interpolation=cv2.INTER_AREA)
    assert float(np.abs(shown.astype(int) - expected.astype(int)).mean()) < 25

    # The clip plays in the page's player (H.264 MP4, fetched with range requests by the browser).
    element.find_element("css selector", "button.play").click()
    video = "document.querySelector('#clip-player')"
    _wait_for(driver, f"return {video}.readyState >= 2 && {video}.videoWidth === 360", 30, "the clip to load")
    assert driver.execute_script(f"return {video}.error") is None
    duration = driver.execute_script(f"return {video}.duration")
    assert duration > 3.0
    driver.execute_script(f"{video}.pause(); {video}.currentTime = {duration / 2};")
    _wait_for(driver, f"return !{video}.seeking && {video}.readyState >= 2", 10, "the seek")
    frame = _image(driver.find_element("id", "clip-player").screenshot_as_png)
    assert float(frame.std()) > 10 and float(frame.mean()) > 20  # a picture, not a black box
    assert "dock cam" in driver.find_element("id", "clip-title").text
