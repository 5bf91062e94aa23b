"""The web page in a real headless Chromium against the real service with live (replayed Ped2) streams: the stream
list shows its state and a camera thumbnail, the score timeline is filled from the replay buffer on open and then
with provisional and final points, category bars appear, and recent events show their stream, category, peak,
snapshot and a clip that plays; each camera's scene state, the timeline's axes and its three scores (fused, head,
scene), operators' verdicts on events and forgetting a camera's scene. What the page draws is checked on
screenshots, not only in the DOM."""

from __future__ import annotations

import re
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
# Normal footage: the lobby camera learns it as its scene (the head, flagging anomalous footage, would keep a
# camera learning).
LOBBY_CLIP = str(PED2_ROOT / "training" / "frames" / "01")
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

webdriver = pytest.importorskip("selenium.webdriver")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("web")
    # 8 s of footage calibrate a camera's scene, so the page shows it calibrated within the test; events may open
    # from the first snippet (the 18 s clips would otherwise leave little time after the scene check's 12.8 s).
    proc = ServiceProcess(
        root / "data", root / "service.log", scene_learn_s=8, scene_check_min_snippets=1
    ).start()
    with proc.client() as client:
        assert (
            client.post("/streams", json={"url": LOBBY_CLIP, "name": "lobby cam", "loop": True}).status_code
            == 201
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


def _click(driver, css: str) -> None:
    """Click what `css` selects; the page rebuilds its tables every few seconds, so a found element may go stale."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(10):
        try:
            driver.find_element("css selector", css).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.1)
    raise AssertionError(f"{css} kept going stale")


def _colour_pixels(image: np.ndarray, rgb: str) -> int:
    bgr = tuple(int(rgb[i : i + 2], 16) for i in (5, 3, 1))
    return int(np.all(np.abs(image.astype(int) - bgr) < 40, axis=2).sum())


def test_page_shows_scene_states_three_scores_axes_and_takes_verdicts(
    service: ServiceProcess, finished_event: dict, browser
) -> None:
    driver = browser
    driver.set_window_size(1400, 1400)
    always = {"enter_threshold": 0.0, "exit_threshold": 0.0, "min_duration_s": 0.0}
    with service.client() as client:
        lobby = next(v for v in client.get("/streams").json()["items"] if v["name"] == "lobby cam")
        # A stream whose event stays open while the test runs (thresholds of 0, replayed in a loop).
        gate = client.post(
            "/streams", json={"url": EVENTS_CLIP, "name": "gate cam", "events": always, "loop": True}
        ).json()
        wait_for(
            lambda: client.get(f"/streams/{lobby['id']}").json()["scene_state"] == "calibrated",
            60,
            "the lobby camera to calibrate its scene",
        )
    driver.get(f"{service.base}/ui/")
    driver.find_element("id", "api-key").send_keys(API_KEY)
    driver.find_element("css selector", "#key-form button").click()
    lobby_row = f"document.querySelector('#streams tbody tr[data-id=\"{lobby['id']}\"]')"
    _wait_for(
        driver,
        f"return {lobby_row} && {lobby_row}.querySelector('td.scene').textContent === 'calibrated'",
        20,
        "the lobby camera shown calibrated",
    )

    # The timeline draws the fused score, the head's and the (calibrated) scene's, on labelled axes.
    canvas = "document.querySelector('#timeline')"
    _wait_for(driver, f"return +{canvas}.dataset.scenePoints >= 6", 30, "scene scores on the timeline")
    data = driver.execute_script(f"return {{...{canvas}.dataset}}")
    assert int(data["points"]) == int(data["headPoints"]) >= int(data["scenePoints"]) >= 6, data
    assert data["scoreTicks"] == "0,0.25,0.5,0.75,1"
    times = [float(t) for t in data["timeTicks"].split(",")]
    assert len(times) >= 3 and times == sorted(times) and times[0] >= 0, data["timeTicks"]
    legend = driver.execute_script(
        "return [...document.querySelectorAll('#timeline-legend li')].map(li => [li.dataset.series, "
        "li.classList.contains('absent')])"
    )
    assert legend == [["score", False], ["head", False], ["scene", False], ["threshold", False]]
    timeline = _image(driver.find_element("id", "timeline").screenshot_as_png)
    # Each series is drawn in its colour (the head's and the scene's thin lines partly cover one another and the
    # fused score, which is mostly one of them).
    for colour in ("#3b6fd8", "#e8710a", "#9334e6"):  # fused, head, scene
        assert _colour_pixels(timeline, colour) > 20, colour
    # The axes' labels are drawn: dark text left of the plot (scores) and below it (media time).
    height = timeline.shape[0]
    assert (timeline[: height - 30, :35] < 120).all(axis=2).sum() > 30
    assert (timeline[height - 30 :, 40:] < 120).all(axis=2).sum() > 30
    info = driver.find_element("id", "live-info").text
    assert re.search(r"head \d\.\d{3}, scene \d\.\d{3}", info), info

    # A closed event takes a verdict (its buttons are enabled); an open one does not yet.
    closed = f"#events tbody tr[data-id='{finished_event['id']}']"
    _wait_for(
        driver,
        f'return document.querySelector("{closed} button.false-alarm")?.disabled === false',
        20,
        "the closed event's buttons",
    )
    _click(driver, f"{closed} button.false-alarm")
    _wait_for(
        driver,
        f"return document.querySelector(\"{closed} .verdict-text\")?.textContent === 'false alarm'",
        15,
        "the verdict shown",
    )
    assert driver.execute_script(f'return document.querySelector("{closed} button.false-alarm").disabled')
    # The gate camera's events: while one is open, every open row's buttons are disabled.
    opened = _wait_for(
        driver,
        "const open = [...document.querySelectorAll('#events tbody tr')].filter(r => "
        "r.cells[6].textContent === 'open'); return open.length > 0 && open.every(r => "
        "r.querySelector('button.false-alarm').disabled && r.querySelector('button.confirm').disabled) && "
        "open[0].dataset.id",
        40,
        "an open event with its buttons disabled",
    )
    with service.client() as client:
        event = client.get(f"/events/{finished_event['id']}").json()
        assert (event["verdict"], event["verdict_category"]) == ("false_alarm", None)
        assert client.get(f"/events/{opened}").json()["verdict"] is None

    # "Forget scene" asks first, then the camera learns again.
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    _click(driver, f"#streams tbody tr[data-id='{lobby['id']}'] button.forget-scene")
    WebDriverWait(driver, 5).until(expected_conditions.alert_is_present()).dismiss()
    with service.client() as client:
        assert client.get(f"/streams/{lobby['id']}/scene").json()["state"] == "calibrated"
        _click(driver, f"#streams tbody tr[data-id='{lobby['id']}'] button.forget-scene")
        WebDriverWait(driver, 5).until(expected_conditions.alert_is_present()).accept()
        wait_for(
            lambda: client.get(f"/streams/{lobby['id']}/scene").json()["footage_s"] < 8,
            10,
            "the scene forgotten",
        )
    shown = _wait_for(
        driver,
        f"const t = {lobby_row}?.querySelector('td.scene').textContent; return t !== 'calibrated' && t",
        10,
        "the lobby camera shown learning again",
    )
    assert re.fullmatch(r"(unfamiliar, )?learning \d{1,2} %|none|unfamiliar", shown), shown
    with service.client() as client:
        assert client.delete(f"/streams/{gate['id']}").status_code == 204
