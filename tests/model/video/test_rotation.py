"""Display rotation: a clip whose frames carry a rotation (a phone's portrait video: landscape pictures with a
display matrix; a camera's H.264 display-orientation SEI) is decoded upright, for files, the analysis path, the
service's `POST /analyze` and live streams. Every clip is made here with ffmpeg: a black 640x360 picture with a
red square in its top-left corner, so where the square ends up tells which way the frames were turned; ffmpeg's
own player-side rotation of the same file is the reference for the whole picture."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from model.inference import AnalysisEngine, EngineConfig
from model.video.pyav_source import PyAVSource
from model.video.source import open_source
from tests.file_stream_server import FileStreamServer

WIDTH, HEIGHT, SQUARE = 640, 360, 80
# Where the top-left square is shown once the frame is turned counter-clockwise by the display rotation.
CORNER = {0: "top_left", 90: "bottom_left", 180: "bottom_right", 270: "top_right"}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True, timeout=120)


def landscape_clip(path: Path, seconds: float = 2.0) -> Path:
    """640x360 H.264 at 10 fps, black with a red SQUARE x SQUARE block at the top left, no rotation."""
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"color=c=black:s={WIDTH}x{HEIGHT}:rate=10,drawbox=x=0:y=0:w={SQUARE}:h={SQUARE}:color=red:t=fill",
        "-t",
        str(seconds),
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "10",
        str(path),
    )
    return path


def rotated_mp4(tmp_path: Path, degrees: int) -> Path:
    """The landscape clip with a display matrix (a stream copy: the pictures stay 640x360). The `rotate` tag
    works with every ffmpeg this runs with (`-display_rotation` needs ffmpeg 6)."""
    plain = landscape_clip(tmp_path / "landscape.mp4")
    out = tmp_path / f"portrait_{degrees}.mp4"
    ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v", f"rotate={degrees}", str(out))
    return out


def displayed_by_ffmpeg(path: Path, width: int, height: int) -> np.ndarray:
    """The first frame as ffmpeg shows it (its autorotate on), RGB [height, width, 3]."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)


def red_corner(frame: np.ndarray) -> str:
    """Which corner of an RGB frame holds the red square (fails unless exactly one does)."""
    h, w = frame.shape[:2]
    m = SQUARE // 2  # the middle of a square in each corner
    corners = {
        "top_left": frame[m, m],
        "top_right": frame[m, w - 1 - m],
        "bottom_left": frame[h - 1 - m, m],
        "bottom_right": frame[h - 1 - m, w - 1 - m],
    }
    red = [name for name, (r, g, b) in corners.items() if r > 200 and g < 50 and b < 50]
    assert len(red) == 1, {name: pixel.tolist() for name, pixel in corners.items()}
    return red[0]


def read_all(source) -> np.ndarray:
    frames = []
    while len(batch := source.read_frames(7)):
        frames.append(batch.frames)
    return np.concatenate(frames)


@pytest.mark.parametrize("degrees", [90, 270, 180])
def test_a_rotated_file_is_decoded_upright(tmp_path: Path, degrees: int) -> None:
    path = rotated_mp4(tmp_path, degrees)
    portrait = degrees in (90, 270)
    size = (HEIGHT, WIDTH) if portrait else (WIDTH, HEIGHT)
    with open_source(path) as source:
        assert isinstance(source, PyAVSource)
        assert (source.width, source.height) == size
        frames = read_all(source)
        report = source.report
    assert frames.shape == (20, size[1], size[0], 3)
    assert report.display_rotation == degrees and report.geometry_changes == []
    assert report.frames_decoded == 20 and report.decode_errors == 0
    assert red_corner(frames[0]) == red_corner(frames[-1]) == CORNER[degrees]
    # The whole picture as ffmpeg itself displays the file (its own decoder and colour conversion: near, not equal).
    reference = displayed_by_ffmpeg(path, *size)
    assert np.abs(frames[0].astype(np.int16) - reference).mean() < 2.0


def test_an_unrotated_file_keeps_its_size_and_says_so(tmp_path: Path) -> None:
    with open_source(landscape_clip(tmp_path / "plain.mp4")) as source:
        assert (source.width, source.height) == (WIDTH, HEIGHT)
        frames = source.read_frames(3).frames
        assert source.report.display_rotation == 0
    assert red_corner(frames[0]) == "top_left"


def test_a_rotation_that_changes_mid_file_is_a_size_change_letterboxed(tmp_path: Path) -> None:
    """Two recordings spliced (MPEG-TS, each with its own display-orientation SEI): the second, portrait, half is
    turned upright and letterboxed into the first half's landscape size, and listed as a size change."""
    plain = landscape_clip(tmp_path / "plain.mp4", seconds=1.0)
    parts = []
    for degrees in (0, 90):
        part = tmp_path / f"part{degrees}.ts"
        sei = f"h264_metadata=display_orientation=insert:rotate={degrees}"
        ffmpeg("-i", str(plain), "-c", "copy", "-bsf:v", sei, "-f", "mpegts", str(part))
        parts.append(part.read_bytes())
    spliced = tmp_path / "spliced.ts"
    spliced.write_bytes(b"".join(parts))
    with open_source(spliced) as source:
        assert (source.width, source.height) == (WIDTH, HEIGHT)
        frames = read_all(source)
        report = source.report
    assert len(frames) == 20 and report.display_rotation == 0
    assert [(c.frame, c.width, c.height) for c in report.geometry_changes] == [(10, HEIGHT, WIDTH)]
    # The portrait picture fills the middle 203 columns (360 x 640 scaled to 360 high), black bars either side.
    turned = frames[15]
    assert turned[:, :200].max() < 40 and turned[:, -200:].max() < 40
    inner = turned[:, (WIDTH - 203) // 2 : (WIDTH + 203) // 2]
    assert red_corner(inner) == "bottom_left"


@pytest.fixture(scope="module")
def engine() -> AnalysisEngine:
    """The default engine (the shipped model when installed)."""
    return AnalysisEngine.from_config(EngineConfig(checkpoint=None, device="cpu"))


@pytest.mark.parametrize("degrees", [90, 270])
def test_analysis_reports_the_displayed_geometry(
    tmp_path: Path, engine: AnalysisEngine, degrees: int
) -> None:
    path = rotated_mp4(tmp_path, degrees)
    probed = engine.probe(path)
    assert (probed.width, probed.height) == (HEIGHT, WIDTH)
    result = engine.analyze(path)
    assert (result.video.width, result.video.height) == (HEIGHT, WIDTH)
    assert result.decode.display_rotation == degrees and result.frames == 20
    # Scored on the upright frames: not what the same pictures score on their side.
    sideways = engine.analyze(landscape_clip(tmp_path / "sideways.mp4"))
    assert (sideways.video.width, sideways.video.height) == (WIDTH, HEIGHT)
    assert [s.score for s in result.snippets] != [s.score for s in sideways.snippets]


@pytest.mark.integration
def test_post_analyze_reports_a_portrait_clip_as_portrait(tmp_path: Path) -> None:
    from tests.service.conftest import ServerProcess, upload_video

    path = rotated_mp4(tmp_path, 90)
    server = ServerProcess(tmp_path / "data").start()
    try:
        with server.client() as client:
            response = upload_video(client, path)
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded", job
    video, decode = job["result"]["video"], job["result"]["decode"]
    assert (video["width"], video["height"]) == (HEIGHT, WIDTH) and decode["display_rotation"] == 90


@pytest.mark.integration
@pytest.mark.parametrize("degrees", [90, 270])
def test_a_live_stream_with_display_orientation_is_decoded_upright(tmp_path: Path, degrees: int) -> None:
    """An HTTP MPEG-TS camera whose H.264 carries a display-orientation SEI (as some cameras mounted on their
    side send), read by the PyAV live decoder."""
    plain = landscape_clip(tmp_path / "plain.mp4")
    path = tmp_path / f"camera_{degrees}.ts"
    sei = f"h264_metadata=display_orientation=insert:rotate={degrees}"
    ffmpeg("-i", str(plain), "-c", "copy", "-bsf:v", sei, "-f", "mpegts", str(path))
    with FileStreamServer(path, duration_s=2.0) as server:
        source = open_source(server.url, stream_decoder="pyav", open_timeout_s=5, read_timeout_s=5)
        try:
            assert source.is_stream and (source.width, source.height) == (HEIGHT, WIDTH)
            batch = source.read_frames(8)
            report = source.report
        finally:
            source.close()
    assert batch.frames.shape == (8, WIDTH, HEIGHT, 3)
    assert report.display_rotation == degrees and report.geometry_changes == []
    assert red_corner(batch.frames[0]) == red_corner(batch.frames[-1]) == CORNER[degrees]
