"""The PyAV camera source against real network servers on loopback: the GStreamer RTSP server serving Ped2 (clean
H.264), a paced HTTP server playing the field capture `hevc_packet_loss.ts` (read in place from the shared data),
and the MJPEG-over-HTTP test camera (which can go silent)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from model.video.pyav_camera import PyAVCameraSource, parse_ffmpeg_options
from model.video.source import StreamUnavailableError, open_source
from tests.file_stream_server import FileStreamServer
from tests.mjpeg_server import MjpegCamera
from tests.rtsp_server import RtspServerProcess, free_port
from tests.service.live.conftest import requires_gstreamer
from tests.shared_data import SHARED_DATA

LOSSY = SHARED_DATA / "field" / "hevc_packet_loss.ts"
USER, PASSWORD = "viewer", "Pa55-w0rd-xyz"
needs_field = pytest.mark.skipif(not LOSSY.is_file(), reason=f"field input not found at {LOSSY}")


def test_ffmpeg_options_use_opencvs_format() -> None:
    assert parse_ffmpeg_options("rtsp_transport;udp| analyzeduration;500000 |") == {
        "rtsp_transport": "udp",
        "analyzeduration": "500000",
    }
    assert parse_ffmpeg_options("") == {}
    assert parse_ffmpeg_options("broken|probesize;32") == {"probesize": "32"}


@pytest.fixture(scope="module")
def camera() -> Iterator[RtspServerProcess]:
    with RtspServerProcess(user=USER, password=PASSWORD) as server:
        yield server


@pytest.mark.integration
@requires_gstreamer
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_clean_rtsp_stream_decodes_without_errors(camera: RtspServerProcess, transport: str) -> None:
    options = {"analyzeduration": "500000"} if transport == "tcp" else {"rtsp_transport": "udp"}
    with open_source(
        camera.url_with_credentials(),
        stream_decoder="pyav",
        stream_options=options,
        open_timeout_s=5,
        read_timeout_s=5,
    ) as source:
        assert isinstance(source, PyAVCameraSource) and source.is_stream
        assert (source.width, source.height, source.fps) == (360, 240, 10.0)
        assert PASSWORD not in repr(source) and PASSWORD not in source.uri
        arrivals, batches = [], []
        for _ in range(3):
            batches.append(source.read_frames(16))
            arrivals.append(source.last_frame_mono)
        report = source.report
    frames = np.concatenate([b.frames for b in batches])
    times = np.concatenate([b.times_s for b in batches])
    assert frames.shape == (48, 240, 360, 3) and frames.dtype == np.uint8
    assert frames.std() > 10  # pictures, not grey
    assert report.decode_errors == report.damaged_frames == report.lost_frames == 0
    assert not np.concatenate([b.damaged for b in batches]).any()
    np.testing.assert_allclose(np.diff(times), 0.1, atol=0.02)  # the camera's 10 fps, from its timestamps
    # The camera sends in real time: a 16-frame batch takes about 1.6 s, and the newest frame's time follows.
    assert 1.0 < arrivals[2] - arrivals[1] < 2.5


@pytest.mark.integration
@needs_field
def test_lossy_http_stream_flags_and_counts_damaged_frames() -> None:
    with FileStreamServer(LOSSY, duration_s=8.0) as server:
        source = open_source(server.url, stream_decoder="pyav", open_timeout_s=5, read_timeout_s=5)
        assert (source.width, source.height, source.fps) == (1280, 720, 25.0)
        damaged, count = [], 0
        started = source.last_frame_mono
        try:
            while len(batch := source.read_frames(16)):
                assert batch.frames.shape[1:] == (720, 1280, 3)
                damaged.append(batch.damaged)
                count += len(batch)
                if len(batch) < 16:
                    break
        except StreamUnavailableError as exc:
            # FFmpeg's HTTP reader may end the closed connection with an I/O error: a dropped stream, either way.
            assert server.url.split("/")[-1] in str(exc)
        finally:
            source.close()
        report = source.report
    flags = np.concatenate(damaged)
    # The capture holds 200 frames: about 30 % come out corrupt, three are lost in transport.
    assert count >= 176 and report.frames_decoded >= count
    assert report.damaged_frames > 20
    assert 1 <= report.lost_frames <= 3
    assert report.decode_errors == report.damaged_frames + report.lost_frames
    assert flags.any() and not flags.all()
    assert source.last_frame_mono - started > 5.0  # paced like a camera: the newest frame came ~8 s in


@pytest.mark.integration
@requires_gstreamer
def test_refused_credentials_and_unreachable_cameras_name_no_secret(camera: RtspServerProcess) -> None:
    wrong = camera.url_with_credentials().replace(PASSWORD, "not-" + PASSWORD)
    with pytest.raises(StreamUnavailableError, match="401 Unauthorized") as refused:
        open_source(wrong, stream_decoder="pyav", open_timeout_s=3, read_timeout_s=3)
    down = f"rtsp://{USER}:{PASSWORD}@127.0.0.1:{free_port()}/cam?token=tok-{PASSWORD}"
    with pytest.raises(StreamUnavailableError, match="Connection refused") as unreachable:
        open_source(down, stream_decoder="pyav", open_timeout_s=3, read_timeout_s=3)
    for error in (refused.value, unreachable.value):
        message = str(error)
        assert PASSWORD not in message and f"{USER}:" not in message
        assert "rtsp://***@127.0.0.1:" in message


@pytest.mark.integration
def test_a_silent_camera_times_out_and_close_from_another_thread_waits_for_the_read() -> None:
    with MjpegCamera(fps=10.0) as mjpeg:
        source = open_source(mjpeg.url, stream_decoder="pyav", open_timeout_s=3, read_timeout_s=1.5)
        assert (source.width, source.height) == (360, 240) and source.is_stream
        assert len(source.read_frames(8)) == 8 and source.report.decode_errors == 0
        mjpeg.silent()
        last = source.last_frame_mono
        started = time.monotonic()
        with pytest.raises(StreamUnavailableError, match="no data"):
            source.read_frames(50)  # the frames in flight arrive, then nothing
        waited = time.monotonic() - started
        assert 1.0 < waited < 4.0 and source.last_frame_mono - last < waited - 1.0
        source.close()

        # A read blocked on a silent camera: close() from another thread returns at once, the read ends by its
        # timeout and releases the connection, and nothing is read afterwards.
        mjpeg.resume()
        source = open_source(mjpeg.url, stream_decoder="pyav", open_timeout_s=3, read_timeout_s=1.5)
        mjpeg.silent()
        outcome: list[object] = []
        reader = threading.Thread(target=lambda: outcome.append(_read_or_error(source)), daemon=True)
        reader.start()
        time.sleep(0.5)
        asked = time.monotonic()
        source.close()
        assert time.monotonic() - asked < 0.2
        reader.join(5)
        assert not reader.is_alive() and outcome
        assert len(source.read_frames(4)) == 0


def _read_or_error(source) -> object:
    try:
        return source.read_frames(100)
    except StreamUnavailableError as exc:
        return exc
