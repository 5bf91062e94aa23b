"""Stream readers against real network cameras on loopback (an MJPEG-over-HTTP server, a closed port): a camera
that goes silent shows `stalled` before its read timeout and is reconnected; a camera that is down is checked
cheaply and reopened as soon as it answers, however long it was away."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from model.video.pyav_camera import PyAVCameraSource
from model.video.snippets import SnippetSpec
from model.video.source import CaptureSource
from service.live.preflight import check_reachable
from service.live.readers import Backoff, StreamReader, open_camera
from tests.mjpeg_server import MjpegCamera
from tests.rtsp_server import free_port

pytestmark = pytest.mark.integration

READ_TIMEOUT_S = 3.0


class Calls:
    """Counts calls to the real opener and the real reachability check (they still do all the work)."""

    def __init__(self) -> None:
        self.opens: list[float] = []
        self.probes: list[float] = []

    def opener(self, url: str, **kwargs):
        self.opens.append(time.monotonic())
        return open_camera(url, **kwargs)

    def probe(self, url: str, timeout_s: float) -> None:
        self.probes.append(time.monotonic())
        check_reachable(url, timeout_s)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while (value := predicate()) is False or value is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return value


@pytest.fixture
def make_reader() -> Iterator:
    readers: list[StreamReader] = []

    def make(url: str, calls: Calls, backoff: Backoff | None = None) -> StreamReader:
        reader = StreamReader(
            "cam",
            url,
            SnippetSpec(frames_per_snippet=16, sampled_frames_per_snippet=4),
            wake=lambda: None,
            backoff=backoff or Backoff(0.3, 30.0),
            open_timeout_s=2.0,
            read_timeout_s=READ_TIMEOUT_S,
            probe_interval_s=0.5,
            probe_timeout_s=1.0,
            stall_after_s=1.0,
            opener=calls.opener,
            probe=calls.probe,
        )
        readers.append(reader)
        reader.start()
        return reader

    yield make
    for reader in readers:
        reader.stop(join_timeout_s=10)
    assert not any(r.alive for r in readers)


def next_snippet(reader: StreamReader, timeout: float):
    return wait_until(reader.take, timeout, "a snippet")


def test_a_silent_http_camera_shows_stalled_within_its_read_timeout_then_reconnects(make_reader) -> None:
    calls = Calls()
    with MjpegCamera() as camera:
        reader = make_reader(camera.url, calls)
        next_snippet(reader, 10)
        assert reader.status() == ("live", None)
        camera.silent()
        silenced = time.monotonic()
        _, error = wait_until(
            lambda: (s := reader.status())[0] == "stalled" and s, READ_TIMEOUT_S, "the stalled state"
        )
        stalled_after = time.monotonic() - silenced
        assert error is not None and "no frame received" in error
        # Within its read timeout (the read gives up then): stalled first, then a reconnection.
        assert stalled_after < READ_TIMEOUT_S
        wait_until(lambda: reader.status()[0] == "reconnecting", READ_TIMEOUT_S + 2, "the reconnection")
        opens_before = len(calls.opens)
        camera.resume()
        resumed = time.monotonic()
        snippet = next_snippet(reader, 15)
        assert len(calls.opens) > opens_before
        assert reader.status() == ("live", None) and reader.stats.reconnects >= 1
        # The outage is counted from the last frame received, not from when the read gave up.
        assert snippet.gap is not None and "reconnect" in snippet.gap.reasons
        assert snippet.gap.outage_s >= READ_TIMEOUT_S
    print(
        f"\nsilent MJPEG camera: stalled after {stalled_after:.2f}s, live {time.monotonic() - resumed:.2f}s "
        "after it resumed"
    )


def test_a_camera_that_is_down_is_probed_and_reopened_as_soon_as_it_answers(make_reader) -> None:
    port = free_port()
    calls = Calls()
    # A backoff that, were it used for a camera that is down, would be far beyond the recovery asked for.
    reader = make_reader(f"http://127.0.0.1:{port}/video.mjpg", calls, Backoff(4.0, 30.0))
    wait_until(lambda: len(calls.probes) >= 6, 10, "six reachability checks")
    assert reader.status()[0] == "connecting"
    assert "cannot connect" in (reader.stats.last_error or "")
    # While the camera is down only the cheap check runs: one open (the first), nothing more.
    assert len(calls.opens) == 1
    intervals = [b - a for a, b in zip(calls.probes[1:], calls.probes[2:], strict=False)]
    assert max(intervals) < 1.0
    with MjpegCamera(port=port) as camera:
        back = time.monotonic()
        next_snippet(reader, 10)
        recovery = time.monotonic() - back
        assert camera.requests >= 2  # the check (HEAD) and the capture (GET)
    print(f"\ncamera down at start: first snippet {recovery:.2f}s after it answered")
    # One probe interval, the open and 16 frames at 10 fps (1.6 s).
    assert recovery < 4.0


def test_a_stopped_reader_ends_while_waiting_for_a_dead_camera(make_reader) -> None:
    calls = Calls()
    reader = make_reader(f"http://127.0.0.1:{free_port()}/video.mjpg", calls)
    wait_until(lambda: len(calls.probes) >= 1, 5, "a reachability check")
    stopped = threading.Event()
    threading.Thread(target=lambda: (reader.stop(join_timeout_s=5), stopped.set()), daemon=True).start()
    assert stopped.wait(6)
    assert not reader.alive and reader.status()[0] == "stopped"


def test_open_camera_decodes_network_cameras_with_the_chosen_decoder() -> None:
    with MjpegCamera() as camera:
        for decoder, kind in (("pyav", PyAVCameraSource), ("opencv", CaptureSource)):
            with open_camera(camera.url, open_timeout_s=2.0, read_timeout_s=2.0, decoder=decoder) as source:
                assert type(source) is kind and source.is_stream
                assert source.read_frames(4).frames.shape == (4, 240, 360, 3)


@pytest.mark.parametrize(("decoder", "concurrency", "expected"), [("pyav", 3, 3), ("opencv", 3, 1)])
def test_cameras_open_a_few_at_a_time_with_pyav_and_one_at_a_time_with_opencv(
    monkeypatch: pytest.MonkeyPatch, decoder: str, concurrency: int, expected: int
) -> None:
    """Six readers open the same real camera at once; the real opens are counted while they run."""
    import service.live.readers as readers

    real_open = readers.open_source
    lock, running, most = threading.Lock(), [0], [0]

    def counted(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.3)  # keep each open in flight long enough for the others to pile up
            return real_open(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(readers, "open_source", counted)
    sources = []
    with MjpegCamera() as camera:

        def open_one() -> None:
            source = open_camera(
                camera.url,
                open_timeout_s=5.0,
                read_timeout_s=5.0,
                decoder=decoder,  # type: ignore[arg-type]
                open_concurrency=concurrency,
            )
            with lock:
                sources.append(source)

        threads = [threading.Thread(target=open_one) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        try:
            assert len(sources) == 6 and all(s.is_stream for s in sources)
            assert most[0] == expected
        finally:
            for source in sources:
                source.close()
    with pytest.raises(ValueError, match="open_concurrency"):
        open_camera("rtsp://127.0.0.1:1/x", open_timeout_s=1, read_timeout_s=1, open_concurrency=0)
