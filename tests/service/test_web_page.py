"""The web page in a real headless Chromium against the real service with a live (replayed Ped2) stream: the stream
list shows its state, the score timeline fills with provisional and final points, and category bars appear."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.footage import PED2_ROOT
from tests.service.live.service_process import API_KEY, ServiceProcess

pytestmark = pytest.mark.integration

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
