from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from model.video.letterbox import letterbox_into
from model.video.pyav_source import NotVideoError
from model.video.source import (
    FrameFolderSource,
    StreamUnavailableError,
    VideoDecodeError,
    open_source,
)
from tests.footage import PED2_ROOT, encode_ped2_clip, ped2_frame_files


@pytest.fixture(scope="module")
def ped2_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encode_ped2_clip(tmp_path_factory.mktemp("footage") / "ped2_test01.mp4")


def _read_all(source, batch: int) -> np.ndarray:
    parts = []
    while len(part := source.read_batch(batch)):
        assert part.dtype == np.uint8 and part.shape[1:] == (source.height, source.width, 3)
        parts.append(part)
    return np.concatenate(parts)


def test_decodes_real_clip_encoded_to_mp4(ped2_mp4: Path) -> None:
    originals = np.stack(
        [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in ped2_frame_files("testing/frames/01")]
    )
    with open_source(ped2_mp4) as source:
        assert (source.width, source.height) == (360, 240)
        assert source.fps == pytest.approx(10.0)
        assert source.frame_count == 180
        frames = _read_all(source, 50)
        assert len(source.read_batch(10)) == 0
    assert frames.shape == (180, 240, 360, 3)
    # Lossy codec: close to the source frames, and in the same order (each frame nearest its own original).
    error = np.abs(frames.astype(np.int16) - originals.astype(np.int16)).mean()
    assert error < 6.0
    shifted = np.abs(frames[1:].astype(np.int16) - originals[:-1].astype(np.int16)).mean()
    assert shifted > error


def test_frame_folder_is_read_exactly_in_order_as_rgb() -> None:
    folder = PED2_ROOT / "testing/frames/03"
    files = ped2_frame_files("testing/frames/03")
    with open_source(folder, folder_fps=12.5) as source:
        assert isinstance(source, FrameFolderSource)
        assert source.fps == 12.5 and source.frame_count == len(files) == 150
        frames = _read_all(source, 64)
    assert len(frames) == 150
    for i in (0, 63, 64, 149):
        expected = cv2.cvtColor(cv2.imread(str(files[i])), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(frames[i], expected)


def test_frame_folder_uses_natural_order(tmp_path: Path) -> None:
    for i in (1, 2, 10, 11):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((8, 10, 3), i, np.uint8))
    with open_source(tmp_path) as source:
        assert source.fps == 10.0
        frames = source.read_batch(10)
    assert frames[:, 0, 0, 0].tolist() == [1, 2, 10, 11]


def test_frame_folder_flags_an_unreadable_image_as_damaged(tmp_path: Path) -> None:
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((8, 10, 3), 10 * i, np.uint8))
    (tmp_path / "2.png").write_bytes(b"not a png")
    with open_source(tmp_path) as source:
        batch = source.read_frames(10)
        report = source.report
    # The broken frame repeats its predecessor (the timeline keeps its length) and says so.
    assert batch.frames[:, 0, 0, 0].tolist() == [0, 10, 10, 30]
    assert batch.damaged.tolist() == [False, False, True, False]
    assert report.decode_errors == report.damaged_frames == 1 and report.frames_decoded == 4
    np.testing.assert_allclose(batch.times_s, np.arange(4) / 10.0)


def test_letterbox_keeps_the_aspect_ratio() -> None:
    out = np.full((100, 200, 3), 255, np.uint8)
    letterbox_into(np.full((100, 100, 3), 7, np.uint8), out)  # a square picture in a 2:1 frame
    assert out[:, :50].max() == 0 and out[:, 150:].max() == 0 and (out[:, 50:150] == 7).all()
    tall = np.empty((100, 200, 3), np.uint8)
    letterbox_into(np.full((400, 200, 3), 9, np.uint8), tall)  # 1:2 into 2:1: a 50x100 column in the middle
    assert (tall[:, 75:125] == 9).all() and tall[:, :75].max() == 0 and tall[:, 125:].max() == 0


def _assert_fails_fast(path, *words: str, error: type[Exception] = VideoDecodeError) -> None:
    start = time.perf_counter()
    with pytest.raises(error) as info:
        open_source(path)
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    for word in words:
        assert word in message, message


def test_empty_file_gives_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    _assert_fails_fast(empty, "empty", str(empty))


def test_corrupt_and_non_video_files_give_clear_error(tmp_path: Path, ped2_mp4: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    _assert_fails_fast(garbage, "cannot", str(garbage))
    text = tmp_path / "notes.avi"
    text.write_text("this is not a video\n" * 100)
    _assert_fails_fast(text, "not a video", str(text), error=NotVideoError)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(ped2_mp4.read_bytes()[:3000])
    _assert_fails_fast(truncated, "cannot", str(truncated))
    assert issubclass(VideoDecodeError, ValueError)


def test_missing_paths_and_bad_urls(tmp_path: Path) -> None:
    _assert_fails_fast(tmp_path / "nope.mp4", "no such")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "readme.txt").write_text("x")
    _assert_fails_fast(tmp_path / "frames", "no image files")
    _assert_fails_fast("ftp://camera.local/live", "unsupported URL scheme")


def test_unreachable_stream_fails_fast_without_leaking_credentials() -> None:
    # Port 9 on localhost: connection refused at once, no camera needed.
    _assert_fails_fast("rtsp://admin:secret@127.0.0.1:9/stream", "127.0.0.1", error=StreamUnavailableError)
    with pytest.raises(StreamUnavailableError) as info:
        open_source("rtsp://admin:secret@127.0.0.1:9/stream")
    assert "secret" not in str(info.value)


def test_repr_and_errors_never_show_camera_credentials(tmp_path) -> None:
    from model.video.source import open_source as open_any
    from model.video.url_masking import mask_url

    assert (
        mask_url("rtsp://admin:hunter2@cam.local:554/live?token=abc")
        == "rtsp://***@cam.local:554/live?token=***"
    )
    with pytest.raises(VideoDecodeError) as info:
        open_any("rtsp://admin:hunter2@127.0.0.1:9/x", open_timeout_s=1)
    assert "hunter2" not in str(info.value) and "***@127.0.0.1" in str(info.value)
    video = encode_ped2_clip(tmp_path / "clip.mp4", max_frames=4)
    with open_any(video) as source:
        assert str(video) in repr(source)
