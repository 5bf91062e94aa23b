"""The feedback training set: clips read from files or from a cluster's shared database, features reused across
builds with today's verdicts, clips that do not decode left out and said so."""

import numpy as np
import pytest

from model.inference import AnalysisEngine, EngineConfig
from service.event_media.store import MediaStore
from service.live.events import LiveEventStore
from service.scene.feedback_dataset import (
    FeedbackDatasetError,
    build_feedback_store,
    clip_file,
    plan_feedback,
)
from service.scene.store import FeedbackStore
from service.storage import Database
from tests.footage import encode_ped2_clip


@pytest.fixture(scope="module")
def engine():
    # The motion-only shipped model: the cheapest real backbone to extract with.
    return AnalysisEngine.from_config(EngineConfig(checkpoint="ped2_motion", device="cpu"))


def _encode(engine):
    def encode(path):
        encoded = engine.encode(path)
        return encoded.features.float().cpu().numpy(), encoded.frames, encoded.info.fps

    return encode


def _event(db, media, tmp_path, clip, verdict, category=None, data=None):
    live = LiveEventStore(db)
    event_id = live.open("cam1", 0.0, 0.0, 0.9, dominant="Biking")
    live.close(
        event_id,
        end_s=2.0,
        ended_at=2.0,
        peak=0.9,
        mean=0.7,
        dominant="Biking",
        categories={},
        reason="stream_ended",
    )
    media.create(event_id, "cam1")
    partial = media.partial_clip_path(event_id)
    if data is None:
        encode_ped2_clip(tmp_path / f"{event_id}.mp4", clip, max_frames=32).replace(partial)
    else:
        partial.write_bytes(data)
    assert media.save_clip(event_id, partial, "mp4v")
    FeedbackStore(db).put(event_id, verdict, category, 0)
    return event_id


def test_a_clusters_clip_is_read_from_the_shared_database(tmp_path):
    db = Database(tmp_path / "db.sqlite3")
    media = MediaStore(db, tmp_path / "scratch", shared=True)
    original = encode_ped2_clip(tmp_path / "original.mp4", "testing/frames/02", max_frames=32).read_bytes()
    event_id = _event(db, media, tmp_path, None, "confirmed", data=original)
    assert not media.clip_path(event_id).exists()  # stored in parts, not as a file
    with clip_file(media, media.get(event_id), tmp_path) as path:
        assert path is not None and path.read_bytes() == original
    assert not path.exists()
    other = _event(db, media, tmp_path, None, "confirmed", "Vehicle", data=original)
    plan = plan_feedback(
        db, media, ["Biking", "Vehicle"], min_per_class=2, normal_videos=[tmp_path / "original.mp4"]
    )
    assert [item.event_id for item in plan.usable] == [event_id, other]
    assert plan.labels == {event_id: (1, "Biking"), other: (1, "Vehicle")}  # the operator's category first


def test_features_are_reused_with_todays_verdicts_and_bad_clips_left_out(tmp_path, engine):
    db = Database(tmp_path / "db.sqlite3")
    media = MediaStore(db, tmp_path / "media")
    bikes = [_event(db, media, tmp_path, f"testing/frames/0{i}", "confirmed") for i in (2, 4)]
    walks = [_event(db, media, tmp_path, f"training/frames/0{i}", "false_alarm") for i in (1, 3, 5)]
    broken = _event(db, media, tmp_path, None, "false_alarm", data=b"not a video at all")
    names = engine.category_names
    args = (engine.backbone.identity, engine.spec.frames_per_snippet, engine.spec.sampled_frames_per_snippet)

    def build():
        plan = plan_feedback(db, media, names, min_per_class=2)
        return build_feedback_store(
            plan, media, _encode(engine), tmp_path / "store", *args, names, progress=False
        )

    first = build()
    assert first.extracted == 5 and (first.confirmed, first.false_alarms) == (2, 3)
    assert first.skipped[broken].startswith("its clip cannot be decoded")
    features = first.store.load(f"event-{walks[0]}")
    assert (
        features.shape[1] == engine.backbone.dim
        and first.store.entry(f"event-{bikes[0]}").category == "Biking"
    )

    FeedbackStore(db).put(walks[0], "confirmed", "Skateboarding", 0)  # the operator changes their mind
    second = build()
    assert second.extracted == 0 and broken in second.skipped  # the others' features were reused
    assert (second.confirmed, second.false_alarms) == (3, 2)
    entry = second.store.entry(f"event-{walks[0]}")
    assert (entry.label, entry.category) == (1, "Skateboarding")
    np.testing.assert_array_equal(second.store.load(f"event-{walks[0]}"), features)
    assert sorted(second.names) == sorted(f"event-{i}" for i in [*bikes, *walks])

    # Every false alarm confirmed: nothing normal is left.
    for event_id in walks[1:]:
        FeedbackStore(db).put(event_id, "confirmed", None, 0)
    with pytest.raises(FeedbackDatasetError, match="too few examples to fine-tune: 5 anomalous"):
        build()
