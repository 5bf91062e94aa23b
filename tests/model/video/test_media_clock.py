from __future__ import annotations

import pytest

from model.video.media_clock import MediaClock


def _run(clock: MediaClock, raws: list[float | None]) -> tuple[list[float], list[int], list]:
    times, lost, jumps = [], [], []
    for i, raw in enumerate(raws):
        t, n, jump = clock.place(i, raw)
        times.append(t)
        lost.append(n)
        if jump is not None:
            jumps.append((jump.frame, jump.from_s, jump.to_s))
    return times, lost, jumps


def test_starts_at_zero_and_follows_timestamps() -> None:
    times, lost, jumps = _run(MediaClock(0.04, constant_rate=True), [1.4, 1.44, 1.48, 1.52])
    assert times == pytest.approx([0, 0.04, 0.08, 0.12]) and lost == [0, 0, 0, 0] and jumps == []


def test_gaps_in_constant_rate_streams_are_lost_frames_but_not_in_vfr() -> None:
    raws = [0.0, 0.04, 0.16, 0.2, 0.22]  # two frames missing before 0.16; 0.22 is merely early
    assert _run(MediaClock(0.04, constant_rate=True), raws)[1] == [0, 0, 2, 0, 0]
    times, lost, _ = _run(MediaClock(0.04, constant_rate=False), raws)
    assert lost == [0] * 5 and times == pytest.approx(raws)


def test_jumps_back_and_far_forward_are_reported_and_the_clock_runs_on() -> None:
    raws = [1000.0, 1000.04, 10.0, 10.04, 5000.0, 5000.04]
    times, lost, jumps = _run(MediaClock(0.04, constant_rate=True), raws)
    assert times == pytest.approx([0.04 * i for i in range(6)])
    assert jumps == [(2, 1000.04, 10.0), (4, 10.04, 5000.0)] and lost == [0] * 6


def test_duplicate_timestamp_is_a_jump_and_missing_ones_take_the_nominal_step() -> None:
    times, _, jumps = _run(MediaClock(0.1, constant_rate=True), [0.0, 0.0, 0.1])
    assert times == pytest.approx([0.0, 0.1, 0.2]) and jumps == [(1, 0.0, 0.0)]
    times, lost, jumps = _run(MediaClock(0.1, constant_rate=True), [None, None, 0.5, None, None, 0.8])
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5]) and lost == [0] * 6 and jumps == []


def test_mpeg_timestamp_wrap_is_not_a_jump() -> None:
    wrap = 2**33 / 90000
    times, lost, jumps = _run(MediaClock(0.04, constant_rate=True, wrap_s=wrap), [wrap - 0.04, 0.0, 0.04])
    assert times == pytest.approx([0, 0.04, 0.08]) and jumps == [] and lost == [0, 0, 0]
