"""Event media recording with the real encoder, database and files: the snapshot shows the peak, the clip spans
pre-roll to post-roll, retention keeps age and total size within their limits (oldest first), deleted events lose
their media, and a crash mid-clip leaves no half file."""

from __future__ import annotations

import time

import av
import cv2
import numpy as np
import pytest

from service.event_media.recorder import EventMedia, MediaPolicy
from service.event_media.store import MediaStore
from service.live.events import LiveEventStore
from service.live.messages import EventNotice
from service.publishers.base import EventChanged, StreamRemoved
from service.storage import Database
from tests.reliability.conftest import wait_for

FPS = 10.0
H, W = 48, 64


def _batch(first: int, n: int = 16) -> np.ndarray:
    """Frames whose brightness is their media index x 2 (mod 256): decoded clips say which frames they hold."""
    values = ((np.arange(first, first + n) * 2) % 256).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (n, H, W, 3)).copy()


def _notice(
    kind: str, event_id: int, start_s: float, peak_s: float, end_s: float | None = None
) -> EventNotice:
    return EventNotice(
        type=kind,
        event_id=event_id,
        start_s=start_s,
        end_s=end_s,
        started_at=0.0,
        peak_score=0.9,
        peak_s=peak_s,
    )


def _announce(media: EventMedia, events: LiveEventStore, frames: int, start_s: float) -> int:
    """The stream read frames [0, frames), then an event starting at `start_s` was announced: its id."""
    ring = media.ring("cam")
    for first in range(0, frames, 16):
        ring.push(first, _batch(first), FPS)
    eid = events.open("cam", start_s, time.time(), 0.9)
    media.publish(EventChanged("cam", "cam", _notice("start", eid, start_s, start_s)))
    return eid


def _clip_ready(store: MediaStore, event_id: int) -> bool:
    record = store.get(event_id)
    return record is not None and record.clip_status == "ready"


@pytest.fixture
def setup(tmp_path):
    db = Database(tmp_path / "db.sqlite")
    events = LiveEventStore(db)
    store = MediaStore(db, tmp_path / "media")
    yield db, events, store
    db.close()


def _media(store: MediaStore, **policy) -> EventMedia:
    media = EventMedia(store, MediaPolicy(max_fps=FPS, pre_roll_s=1.0, post_roll_s=1.0, **policy))
    media.start()
    return media


def test_snapshot_at_the_peak_and_a_clip_from_pre_roll_to_post_roll(setup) -> None:
    _db, events, store = setup
    media = _media(store)
    try:
        ring = media.ring("cam")
        for first in range(0, 64, 16):  # frames 0-63 (6.4 s) read before the event is announced
            ring.push(first, _batch(first), FPS)
        eid = events.open("cam", 3.2, time.time(), 0.9, stream_name="gate")
        media.publish(EventChanged("cam", "gate", _notice("start", eid, start_s=3.2, peak_s=3.2)))
        wait_for(lambda: (r := store.get(eid)) is not None and r.snapshot_bytes > 0, 20, "the media")
        media.publish(EventChanged("cam", "gate", _notice("update", eid, start_s=3.2, peak_s=4.8)))
        # The end is known before the frames after it arrive: the clip stops 1 s after it, at frame 80.
        media.publish(EventChanged("cam", "gate", _notice("end", eid, start_s=3.2, peak_s=4.8, end_s=7.0)))
        wait_for(lambda: media._recordings[eid].stop_index is not None, 20, "the media")
        for first in range(64, 160, 16):
            ring.push(first, _batch(first), FPS)
        wait_for(lambda: _clip_ready(store, eid), 20, "the media")
    finally:
        media.stop()
    # The snapshot is the middle of the peak snippet: frame 48 + 8 = 56.
    snapshot = cv2.imread(str(store.snapshot_path(eid)))
    assert abs(int(snapshot.mean()) - 56 * 2 % 256) <= 2
    # The clip: 1 s before the start (frame 22) to 1 s after the end (frame 80), every frame at 10 fps.
    with av.open(str(store.clip_path(eid))) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name in ("h264", "mpeg4")
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        duration = float(container.duration) / av.time_base
    levels = np.array([f.mean() for f in decoded])
    assert len(decoded) == 80 - 22 + 1
    np.testing.assert_allclose(levels, (np.arange(22, 81) * 2) % 256, atol=3)
    assert duration == pytest.approx(5.9, abs=0.15)
    assert not store.partial_clip_path(eid).exists()
    assert store.get(eid).clip_bytes == store.clip_path(eid).stat().st_size


def test_removing_the_stream_finishes_its_clip_with_the_frames_it_has(setup) -> None:
    _db, events, store = setup
    media = _media(store)
    try:
        eid = _announce(media, events, frames=48, start_s=2.0)
        media.publish(StreamRemoved("cam"))
        wait_for(lambda: _clip_ready(store, eid), 20, "the media")
        # The stream's ring goes with it once its grace period is over.
        wait_for(lambda: media.ring_bytes() == 0, 10, "the removed stream's ring to be released")
    finally:
        media.stop()


def test_an_event_announced_just_after_its_stream_was_removed_still_gets_its_media(setup) -> None:
    """The scheduler's cycle that was running when the stream was removed may open an event: the frames it
    needs are kept for `removed_ring_grace_s`, so it gets a snapshot and a clip of what was read."""
    _db, events, store = setup
    media = _media(store, removed_ring_grace_s=1.0)
    try:
        ring = media.ring("cam")
        for first in range(0, 48, 16):
            ring.push(first, _batch(first), FPS)
        media.publish(StreamRemoved("cam"))
        eid = events.open("cam", 2.0, time.time(), 0.9)
        media.publish(EventChanged("cam", "cam", _notice("start", eid, start_s=2.0, peak_s=2.0)))
        wait_for(lambda: _clip_ready(store, eid), 20, "the media")
        assert store.get(eid).snapshot_bytes > 0
        with av.open(str(store.clip_path(eid))) as container:
            frames = sum(1 for _ in container.decode(video=0))
        assert frames == 48 - 10  # from 1 s of pre-roll before the start (frame 10) to the last frame read
        wait_for(lambda: media.ring_bytes() == 0, 10, "the removed stream's ring to be released")
        # Later announcements for the stream find nothing to show, and nothing breaks.
        late = events.open("cam", 4.0, time.time(), 0.9)
        media.publish(EventChanged("cam", "cam", _notice("start", late, start_s=4.0, peak_s=4.0)))
        time.sleep(0.6)
        assert store.get(late) is None
    finally:
        media.stop()


def test_retention_by_total_size_and_age_oldest_first(setup) -> None:
    _db, events, store = setup
    media = _media(store, max_total_bytes=10**9)
    try:
        ring = media.ring("cam")
        ids = []
        for k in range(6):
            for first in range(160 * k, 160 * (k + 1), 16):
                ring.push(first, _batch(first), FPS)
            start = 16.0 * k + 2.0
            eid = events.open("cam", start, time.time(), 0.9)
            media.publish(EventChanged("cam", "cam", _notice("start", eid, start, start)))
            media.publish(EventChanged("cam", "cam", _notice("end", eid, start, start, end_s=start + 3)))
            wait_for(lambda eid=eid: _clip_ready(store, eid), 20, "the media")
            ids.append(eid)
    finally:
        media.stop()
    sizes = {eid: store.get(eid).snapshot_bytes + store.get(eid).clip_bytes for eid in ids}
    # A cap that holds only the newest two events' media.
    media.policy = MediaPolicy(max_total_bytes=sizes[ids[-1]] + sizes[ids[-2]])
    assert media.enforce_retention() == 4
    assert store.total_bytes() <= media.policy.max_total_bytes
    for eid in ids[:4]:
        assert store.get(eid).clip_status == "expired"
        assert not store.clip_path(eid).exists() and not store.snapshot_path(eid).exists()
    for eid in ids[4:]:
        assert store.get(eid).clip_status == "ready" and store.clip_path(eid).exists()
    # By age: everything is older than a retention of one millisecond.
    media.policy = MediaPolicy(retain_s=0.001)
    time.sleep(0.01)
    assert media.enforce_retention() == 2
    assert store.total_bytes() == 0 and not list(store.root.iterdir())
    # The events themselves stay: only their media expired.
    assert all(events.get(eid) is not None for eid in ids)


def test_deleted_events_lose_their_media_and_crash_leftovers_are_cleaned(setup, tmp_path) -> None:
    db, events, store = setup
    media = _media(store)
    try:
        eid = _announce(media, events, frames=64, start_s=2.0)
        media.publish(EventChanged("cam", "cam", _notice("end", eid, 2.0, 2.0, end_s=3.0)))
        wait_for(lambda: _clip_ready(store, eid), 20, "the media")
        # Events removed behind the media's back (e.g. with their stream): retention removes their files.
        assert events.delete(eid)
        assert media.enforce_retention() == 1
        assert store.get(eid) is None and not store.clip_path(eid).exists()
        assert not store.snapshot_path(eid).exists()
    finally:
        media.stop()
    # A crash while a clip recorded: its row says recording and a .part file is left, plus a stray file.
    other = events.open("cam", 5.0, time.time(), 0.9)
    store.create(other, "cam")
    store.partial_clip_path(other).write_bytes(b"half a clip")
    (store.root / "stray.tmp").write_bytes(b"x")
    assert MediaStore(db, store.root).recover() == 1
    assert store.get(other).clip_status == "failed"
    assert not store.partial_clip_path(other).exists() and not (store.root / "stray.tmp").exists()


def test_a_cluster_worker_fails_only_the_unfinished_clips_of_its_streams(setup) -> None:
    _db, events, store = setup
    for stream_id in ("mine", "adopted", "elsewhere"):
        store.create(events.open(stream_id, 1.0, time.time(), 0.9), stream_id)
    assert store.recover(["mine"]) == 1  # a restarted worker: its own streams only
    assert store.fail_recording(["adopted"]) == 1  # streams taken over from a lost worker
    by_stream = {r.stream_id: r.clip_status for r in map(store.get, range(1, 4)) if r is not None}
    assert by_stream == {"mine": "failed", "adopted": "failed", "elsewhere": "recording"}


def test_the_readers_frame_sink_never_raises(setup) -> None:
    _db, _events, store = setup
    media = EventMedia(store, MediaPolicy())
    push = media.frame_sink("cam")
    push(0, np.zeros((16, 8, 8), np.uint8), 10.0)  # not [F, H, W, 3]: the ring refuses it, the reader goes on
    push(16, _batch(16), FPS)
    assert media.ring("cam").newest_index == 31
    with pytest.raises(ValueError):
        media.ring("cam").push(32, np.zeros((16, 8, 8), np.uint8), FPS)  # the ring itself does refuse it


def test_an_event_that_ends_with_its_source_finishes_its_clip_at_once(setup) -> None:
    _db, events, store = setup
    media = _media(store)
    try:
        eid = _announce(media, events, frames=64, start_s=2.0)
        # The replayed file ended at frame 63: no frame will ever reach the post-roll, so nothing waits for one.
        end = _notice("end", eid, 2.0, 2.0, end_s=6.0).model_copy(update={"end_reason": "stream_ended"})
        media.publish(EventChanged("cam", "cam", end))
        wait_for(lambda: _clip_ready(store, eid), 5, "the clip finished without waiting for frames")
    finally:
        media.stop()


def test_in_a_cluster_the_media_live_in_the_shared_database(database_target, tmp_path) -> None:
    """Cluster mode (`shared`), on either backend: the snapshot and the finished clip are stored in the database,
    readable by any process with no file of the recording one; the clip's scratch file goes once it is stored,
    and retention and deleted events remove the stored media as they remove files."""
    db = Database(database_target)
    events = LiveEventStore(db)
    store = MediaStore(db, tmp_path / "worker-0", shared=True)
    media = _media(store)
    try:
        eid = _announce(media, events, frames=64, start_s=2.0)
        wait_for(lambda: (r := store.get(eid)) is not None and r.snapshot_bytes > 0, 20, "the snapshot")
        media.publish(EventChanged("cam", "cam", _notice("end", eid, 2.0, 2.0, end_s=6.0)))
        ring = media.ring("cam")
        for first in range(64, 128, 16):
            ring.push(first, _batch(first), FPS)
        wait_for(lambda: _clip_ready(store, eid), 20, "the clip")
        other = events.open("cam", 10.0, time.time(), 0.9)
        media.publish(EventChanged("cam", "cam", _notice("start", other, 10.0, 10.0)))
        media.publish(StreamRemoved("cam"))  # finishes its clip with the frames read
        wait_for(lambda: _clip_ready(store, other), 20, "the second clip")
    finally:
        media.stop()
    assert not list(store.root.iterdir())  # nothing left on this machine
    # Another replica: its own scratch directory, the same database.
    reader = MediaStore(Database(database_target), tmp_path / "replica", shared=True)
    record = reader.get(eid)
    snapshot = reader.read_snapshot(eid)
    assert snapshot is not None and len(snapshot) == record.snapshot_bytes
    assert (
        abs(int(cv2.imdecode(np.frombuffer(snapshot, np.uint8), cv2.IMREAD_GRAYSCALE).mean()) - 2 * 28) <= 2
    )
    clip = b"".join(reader.read_clip(eid, 0, record.clip_bytes))
    assert len(clip) == record.clip_bytes
    (tmp_path / "clip.mp4").write_bytes(clip)
    with av.open(str(tmp_path / "clip.mp4")) as container:
        levels = [f.to_ndarray(format="rgb24").mean() for f in container.decode(video=0)]
    # 1 s of pre-roll before the start (frame 10) to 1 s after the end (frame 70).
    np.testing.assert_allclose(levels, (np.arange(10, 71) * 2) % 256, atol=3)
    assert reader.total_bytes() == sum(
        reader.get(i).snapshot_bytes + reader.get(i).clip_bytes for i in (eid, other)
    )
    # Retention: a deleted event's media go; by age, the rest expire (rows kept, bytes gone).
    assert events.delete(other)
    media.policy = MediaPolicy(retain_s=0.001)
    assert media.enforce_retention() == 2
    assert reader.get(other) is None and reader.get(eid).clip_status == "expired"
    assert reader.read_snapshot(eid) is None and list(reader.read_clip(eid, 0, record.clip_bytes)) == []
    assert reader.total_bytes() == 0
    reader.db.close()
    db.close()
