"""The PyAV file decoder on the field inputs (`../shared/data/field`, read in place) and on inputs made here with
ffmpeg: content identification, timestamps, truncation, size changes, packet loss and timestamp jumps."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from model.video.pyav_source import NotVideoError, PyAVSource, count_video_packets
from model.video.snippets import SnippetSpec, iter_snippet_batches
from model.video.source import VideoDecodeError, open_source
from tests.shared_data import SHARED_DATA

FIELD = SHARED_DATA / "field"

pytestmark = pytest.mark.skipif(not FIELD.is_dir(), reason=f"field inputs not found at {FIELD}")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True, timeout=120)


def read_all(source) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frames, times, damaged = [], [], []
    while len(batch := source.read_frames(37)):
        assert batch.frames.shape[1:] == (source.height, source.width, 3)
        frames.append(batch.frames)
        times.append(batch.times_s)
        damaged.append(batch.damaged)
    return np.concatenate(frames), np.concatenate(times), np.concatenate(damaged)


@pytest.mark.parametrize("name", ["dvr_export_raw.h264", "CAM01_20260301_0815", "export.264"])
def test_raw_h264_export_opens_by_content_whatever_its_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    shutil.copyfile(FIELD / "dvr_export_raw.h264", path)
    with open_source(path) as source:
        assert isinstance(source, PyAVSource)
        assert (source.width, source.height) == (640, 360)
        # The stream's own rate field says 90000 fps: unusable, so the raw-stream default is assumed and said.
        assert source.fps == 25.0 and source.report.clock == "assumed_rate"
        frames, times, damaged = read_all(source)
        report = source.report
    assert len(frames) == 120 and report.frames_decoded == 120
    assert report.frames_announced is None and not report.truncated and report.decode_errors == 0
    np.testing.assert_allclose(times, np.arange(120) / 25.0)
    assert not damaged.any()


def test_raw_h265_export_opens_by_content(tmp_path: Path) -> None:
    path = tmp_path / "dvr.h265"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=320x240:r=12",
        "-frames:v",
        "30",
        "-c:v",
        "libx265",
        "-f",
        "hevc",
        str(path),
    )
    nameless = path.rename(tmp_path / "export")
    with open_source(nameless) as source:
        assert (source.width, source.height) == (320, 240)
        frames, times, _ = read_all(source)
    assert len(frames) == 30 and np.all(np.diff(times) > 0)


def test_variable_frame_rate_is_placed_by_timestamps() -> None:
    with open_source(FIELD / "phone_vfr.mp4") as source:
        assert (source.width, source.height) == (720, 1280)
        frames, times, damaged = read_all(source)
        report = source.report
    assert len(frames) == 105 and report.clock == "timestamps"
    # 2 s at 30 fps, 3 s at 5 fps, 2 s at 15 fps: the slow part is a slower rate, not lost frames.
    assert times[48] == pytest.approx(1.6) and times[63] == pytest.approx(2.6)
    assert times[60:75] == pytest.approx(2.0 + np.arange(15) * 0.2)
    assert times[-1] == pytest.approx(7.0 - 1 / 15)
    assert report.lost_frames == 0 and report.decode_errors == 0 and not damaged.any()
    with open_source(FIELD / "phone_vfr.mp4") as source:
        batches = list(iter_snippet_batches(source, SnippetSpec(), 2))
    starts = np.concatenate([b.start_times for b in batches])
    ends = np.concatenate([b.end_times for b in batches])
    assert (starts[3], ends[3]) == pytest.approx((1.6, 2.6))  # frames 48-63


def _avi_with_null_frames(path: Path, kept: list[int], length: int | None = None) -> None:
    """An MPEG-4 AVI at 10 fps coding only the frames `kept` (by index); FFmpeg's muxer writes an empty chunk, a
    null frame, for each index it skips, and counts them in the header. `length`: null frames up to this count
    after the last kept frame (an empty packet at the last index)."""
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
    for i in kept:
        frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 4 * i, np.uint8), format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, 10)
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
    if length is not None:
        empty = av.Packet(b"")
        empty.stream, empty.pts, empty.dts, empty.time_base = stream, length - 1, length - 1, Fraction(1, 10)
        container.mux(empty)
    container.close()


def test_avi_null_frames_are_repeats_not_losses(tmp_path: Path) -> None:
    """Video for Windows codes an unchanged picture as an empty chunk (OpenCV's own sample `tree.avi` has 68 coded
    frames of 444): FFmpeg's muxer writes one for each timestamp it skips, its demuxer skips them on reading."""
    path = tmp_path / "null_frames.avi"
    kept = [i for i in range(60) if i % 4 != 3]  # every 4th frame of 10 fps repeats the previous picture
    _avi_with_null_frames(path, kept)
    with open_source(path) as source:
        frames, times, damaged = read_all(source)
        report = source.report
    assert len(frames) == len(kept) == 45 and report.frames_announced == 59
    assert report.repeated_frames == 14 and report.lost_frames == 0 and report.decode_errors == 0
    assert not damaged.any() and not report.truncated
    # Each frame stands at its own time; a repeat holds the picture before it for one more interval.
    assert times == pytest.approx(np.array(kept) / 10)
    # Null frames at the end have no later frame to show their gap; the header's count still holds them.
    _avi_with_null_frames(tail := tmp_path / "still_end.avi", list(range(20)), length=30)
    with open_source(tail) as source:
        read_all(source)
        report = source.report
    assert report.frames_announced == 30 and report.frames_decoded == 20
    assert report.repeated_frames == 10 and not report.truncated


def test_truncated_file_reports_what_really_decoded() -> None:
    with open_source(FIELD / "truncated_upload.mp4") as source:
        assert source.frame_count == 250  # what the index claims: a hint only
        frames, times, _ = read_all(source)
        report = source.report
    assert 100 <= len(frames) <= 115 and report.frames_decoded == len(frames)
    assert report.frames_announced == 250 and report.truncated
    assert times[-1] == pytest.approx((len(frames) - 1) / 25)
    # Counting packets (no decoding) cannot overstate the frames either.
    assert len(frames) <= count_video_packets(FIELD / "truncated_upload.mp4") < 250


def test_picture_size_change_is_reported_and_letterboxed_not_stretched() -> None:
    with open_source(FIELD / "resolution_switch.ts") as source:
        frames, _, _ = read_all(source)
        report = source.report
    assert frames.shape == (200, 720, 1280, 3)
    assert [(c.frame, c.width, c.height) for c in report.geometry_changes] == [
        (75, 960, 720),
        (150, 1280, 720),
    ]
    # The 960x720 part keeps its 4:3 shape inside the 16:9 frame: 160-pixel black bars left and right.
    middle = frames[75:150]
    assert middle[:, :, :158].max() == 0 and middle[:, :, -158:].max() == 0
    assert middle[:, :, 170:-170].mean() > 20
    assert frames[:75, :, :158].mean() > 20 and frames[150:, :, :158].mean() > 20


def test_packet_loss_flags_damaged_and_lost_frames() -> None:
    with open_source(FIELD / "hevc_packet_loss.ts") as source:
        frames, times, damaged = read_all(source)
        assert len(frames) == 197
        report = source.report
    # Damaged frames are kept (flagged) instead of silently dropped; the three lost ones show as timestamp gaps.
    assert report.lost_frames == 3 and report.frames_decoded + report.lost_frames == 200
    assert report.damaged_frames > 20
    assert report.decode_errors == report.damaged_frames + report.lost_frames
    assert damaged.sum() >= report.damaged_frames and not damaged.all()
    assert np.all(np.diff(times) > 0) and times[-1] == pytest.approx(7.96)
    with open_source(FIELD / "hevc_packet_loss.ts") as source:
        degraded = np.concatenate([b.degraded for b in iter_snippet_batches(source, SnippetSpec(), 4)])
    assert degraded.any() and not degraded.all()


def test_timestamp_jump_keeps_a_monotonic_clock() -> None:
    with open_source(FIELD / "encoder_restart.ts") as source:
        frames, times, damaged = read_all(source)
        report = source.report
    assert len(frames) == 200 and report.frames_announced is None  # not the millions the duration implies
    np.testing.assert_allclose(times, np.arange(200) / 25.0, atol=1e-6)
    assert [(j.frame, j.from_s > 1000, j.to_s < 20) for j in report.timestamp_jumps] == [(100, True, True)]
    assert report.lost_frames == 0 and not damaged.any()
    assert count_video_packets(FIELD / "encoder_restart.ts") == 200
    assert count_video_packets(FIELD / "encoder_restart.ts", limit=150) is None


def test_what_is_not_video_is_told_apart_from_broken_video(tmp_path: Path) -> None:
    text = tmp_path / "notes"
    text.write_text("this is not a video\n" * 100)
    with pytest.raises(NotVideoError, match="not a video"):
        open_source(text)
    audio = tmp_path / "tone"
    ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-f", "wav", str(audio))
    with pytest.raises(NotVideoError, match="no video stream"):
        open_source(audio)
    image = tmp_path / "still"
    ffmpeg(
        "-f", "lavfi", "-i", "color=red:s=64x64", "-frames:v", "1", "-f", "image2", "-c:v", "png", str(image)
    )
    with pytest.raises(NotVideoError, match="not a video"):
        open_source(image)
    # A video whose index is missing is broken video, not "not video".
    cut = tmp_path / "cut"
    ffmpeg("-i", str(FIELD / "phone_vfr.mp4"), "-c", "copy", "-f", "mp4", str(tmp_path / "whole.mp4"))
    cut.write_bytes((tmp_path / "whole.mp4").read_bytes()[:20000])
    with pytest.raises(VideoDecodeError) as info:
        open_source(cut)
    assert not isinstance(info.value, NotVideoError) and "moov" in str(info.value)


def test_frame_size_limit_is_checked_before_decoding() -> None:
    with pytest.raises(VideoDecodeError, match="larger than the limit"):
        PyAVSource(FIELD / "hevc_packet_loss.ts", max_pixels=640 * 360)
    # A size change mid-stream is checked too.
    with PyAVSource(FIELD / "resolution_switch.ts", max_pixels=1280 * 720) as source:
        assert len(read_all(source)[0]) == 200
