"""The live scheduler's provisional/final bookkeeping against a real (untrained) engine on the CPU."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from model.events import EventPolicy
from model.inference import AnalysisEngine, EngineConfig
from model.scene import SceneSettings
from model.scene_familiarity import SceneCalibration, SceneFamiliarity
from model.scoring import live_window_scores
from service.live.events import LiveEventStore, StreamEvents
from service.live.metrics import LiveMetrics
from service.live.readers import Snippet
from service.live.scheduler import LiveScheduler, LiveStream
from service.live.window import FeatureWindows
from service.metrics import ServiceMetrics
from service.publishers.base import EventChanged, Outgoing, Publisher, SnippetsScored, StateChanged
from service.publishers.dispatcher import Dispatcher
from service.scene.registry import SceneRegistry
from service.scene.store import SceneStore
from service.storage import Database, StorageBusy

WINDOW = 4


class Recorder(Publisher):
    """A publisher keeping every snippet message the scheduler sends, as a WebSocket client would read it."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.messages: list[Outgoing] = []

    def publish(self, message: Outgoing) -> None:
        self.messages.append(message)
        if isinstance(message, SnippetsScored):
            self.sent.extend(json.loads(text) for _, text in message.items)


def _dispatcher(recorder: Recorder) -> Dispatcher:
    dispatcher = Dispatcher()
    dispatcher.add(recorder)
    return dispatcher


def _scheduler(
    hub: Recorder,
    store: LiveEventStore,
    engine: AnalysisEngine,
    metrics: LiveMetrics | None = None,
    scenes: SceneRegistry | None = None,
):
    """A scheduler whose thread never runs: tests drive its cycle's steps themselves."""
    metrics = metrics or LiveMetrics(ServiceMetrics())
    scheduler = LiveScheduler(None, _dispatcher(hub), store, metrics, WINDOW, scenes)  # type: ignore[arg-type]
    scheduler._windows = FeatureWindows(WINDOW, engine.backbone.dim, engine.device)
    return scheduler


def _stream(
    scheduler: LiveScheduler, engine: AnalysisEngine, store: LiveEventStore, name: str = "s", reader=None
) -> LiveStream:
    """A stream holding a window slot, whose every scored snippet is high (thresholds 0)."""
    policy = EventPolicy(enter_threshold=0.0, exit_threshold=0.0)
    stream = LiveStream(name, name, reader=reader, policy=policy, created_at=0.0)
    assert scheduler._windows is not None
    stream.slot = scheduler._windows.acquire()
    stream.events = StreamEvents(name, name, policy, engine.category_names, store)
    return stream


class FlakyEventStore(LiveEventStore):
    """The real store, except that the next `fail_next` event openings find the database busy."""

    fail_next = 0

    def open(self, stream_id: str, start_s: float, started_at: float, peak: float, **fields) -> int:
        if self.fail_next:
            self.fail_next -= 1
            raise StorageBusy("database is locked")
        return super().open(stream_id, start_s, started_at, peak, **fields)


@pytest.fixture(scope="module")
def engine() -> AnalysisEngine:
    # Random frames are nothing like the default model's training footage: these tests are about bookkeeping,
    # so the scene check is off except where a test sets its own.
    return AnalysisEngine.from_config(EngineConfig(checkpoint=None, device="cpu", scene_check="off"))


def _snippet(engine: AnalysisEngine, index: int, rng: np.random.Generator) -> Snippet:
    f = engine.spec.frames_per_snippet
    frames = rng.integers(0, 256, (engine.spec.sampled_frames_per_snippet, 64, 64, 3), dtype=np.uint8)
    now = time.time()
    return Snippet("s", index, frames, index * f / 25.0, (index + 1) * f / 25.0, now, time.monotonic())


def test_a_failed_cycle_does_not_shift_later_final_scores(tmp_path, engine: AnalysisEngine) -> None:
    hub = Recorder()
    store = FlakyEventStore(Database(tmp_path / "db.sqlite"))
    scheduler = _scheduler(hub, store, engine)
    # Every final score opens an event, so the event store is written on every cycle after the first.
    stream = _stream(scheduler, engine, store)
    rng = np.random.default_rng(0)
    snippets = [_snippet(engine, i, rng) for i in range(3)]

    scheduler._process(engine, [(stream, snippets[0])])
    store.fail_next = 1
    with pytest.raises(StorageBusy):
        scheduler._process(engine, [(stream, snippets[1])])  # the run loop logs and counts this
    hub.sent.clear()
    scheduler._process(engine, [(stream, snippets[2])])

    finals = [m for m in hub.sent if m["status"] == "final"]
    assert len(finals) == 1
    # The window now holds snippets 0, 1, 2: the final score read from it is snippet 1's, and says so.
    with torch.inference_mode():
        features = engine.backbone.encode_snippets(np.stack([s.frames for s in snippets]))
        expected = engine.head(features[None]).scores[0, -2].item()
    assert finals[0]["index"] == 1
    assert finals[0]["score"] == pytest.approx(expected, abs=1e-5)


def test_removed_streams_free_their_windows_even_if_closing_their_event_fails(
    tmp_path, engine: AnalysisEngine
) -> None:
    class BusyOnClose(LiveEventStore):
        def close(self, event_id: int, **fields) -> None:
            raise StorageBusy("database is locked")

    store = BusyOnClose(Database(tmp_path / "db.sqlite"))
    scheduler = _scheduler(Recorder(), store, engine)
    rng = np.random.default_rng(1)
    streams = [_stream(scheduler, engine, store, name) for name in ("a", "b")]
    for stream in streams:
        scheduler.add(stream)
    for i in range(2):  # the second cycle's final score opens (and announces) an event on each stream
        scheduler._process(engine, [(s, _snippet(engine, i, rng)) for s in streams])
    assert all(s.events is not None and s.events.detector.active for s in streams)
    for stream in streams:
        scheduler.remove(stream.id)
    scheduler._release_removed()  # the run loop's first step each cycle
    assert scheduler._windows.in_use == 0
    assert all(s.slot is None for s in streams)


@pytest.mark.parametrize(
    ("threshold", "mode"), [(1e-9, "withhold_events"), (1e-9, "report"), (1e12, "withhold_events")]
)
def test_an_unfamiliar_window_is_flagged_and_withholds_its_events(
    tmp_path, engine: AnalysisEngine, threshold: float, mode: str
) -> None:
    dim = engine.backbone.dim
    calibration = SceneCalibration(
        mean=[0.0] * dim, std=[1.0] * dim, threshold=threshold, margin=10.0, training_clip_distances={}
    )
    saved = engine.scene, engine.config
    engine.scene = SceneFamiliarity(calibration, engine.device)
    # One snippet suffices here; test_no_event_before_the_check_has_enough_snippets covers the minimum.
    engine.config = engine.config.model_copy(update={"scene_check": mode, "scene_check_min_snippets": 1})
    try:
        hub = Recorder()
        store = LiveEventStore(Database(tmp_path / "db.sqlite"))
        metrics = LiveMetrics(ServiceMetrics())
        scheduler = _scheduler(hub, store, engine, metrics)
        stream = _stream(scheduler, engine, store)  # any evidence opens an event
        rng = np.random.default_rng(2)
        for i in range(3):
            scheduler._process(engine, [(stream, _snippet(engine, i, rng))])
    finally:
        engine.scene, engine.config = saved
    familiar = threshold > 1
    scenes = [m["scene"] for m in hub.sent]
    assert len(scenes) == 5 and all(s["familiar"] is familiar for s in scenes)
    # Each message's verdict is over the window ending at its own snippet (final, then provisional).
    assert [s["snippets"] for s in scenes] == [1, 1, 2, 2, 3]
    with torch.inference_mode():
        window = engine.backbone.encode_snippets(
            np.stack([_snippet(engine, i, np.random.default_rng(2)).frames for i in range(1)])
        )
    assert scenes[0]["distance"] == pytest.approx(float(window.square().mean()), rel=1e-4)
    assert stream.last_scene is not None and stream.last_scene.model_dump() == scenes[-1]
    withheld = not familiar and mode == "withhold_events"
    assert stream.events.detector.active is not withheld
    assert metrics.unfamiliar_snippets._value.get() == (0 if familiar else 3)


def test_no_event_before_the_check_has_enough_snippets(tmp_path, engine: AnalysisEngine) -> None:
    """The leak of issue 28: an event opened in a stream's first 3.2 s, before the familiarity check could judge.
    Any evidence opens an event here, on a familiar view, yet none opens before the check has 3 snippets."""
    dim = engine.backbone.dim
    calibration = SceneCalibration(
        mean=[0.0] * dim, std=[1.0] * dim, threshold=1e12, margin=10.0, training_clip_distances={}
    )
    saved = engine.scene, engine.config
    engine.scene = SceneFamiliarity(calibration, engine.device)
    engine.config = engine.config.model_copy(
        update={"scene_check": "withhold_events", "scene_check_min_snippets": 3}
    )
    try:
        hub = Recorder()
        store = LiveEventStore(Database(tmp_path / "db.sqlite"))
        scheduler = _scheduler(hub, store, engine, LiveMetrics(ServiceMetrics()))
        stream = _stream(scheduler, engine, store)
        rng = np.random.default_rng(3)
        opened_at = None
        for i in range(7):
            scheduler._process(engine, [(stream, _snippet(engine, i, rng))])
            if opened_at is None and stream.events.detector.active:
                opened_at = i
    finally:
        engine.scene, engine.config = saved
    starts = [n for m in hub.sent for n in m["events"] if n["type"] == "start"]
    # The final score of snippet 2 (sent with snippet 3) is the first the check judged over 3 snippets.
    assert opened_at == 3 and len(starts) == 1
    assert next(m["index"] for m in hub.sent if m["events"]) == 2


def test_an_open_event_ends_when_the_view_becomes_unfamiliar(tmp_path, engine: AnalysisEngine) -> None:
    dim = engine.backbone.dim

    def scene(threshold: float) -> SceneFamiliarity:
        calibration = SceneCalibration(
            mean=[0.0] * dim, std=[1.0] * dim, threshold=threshold, margin=10.0, training_clip_distances={}
        )
        return SceneFamiliarity(calibration, engine.device)

    saved = engine.scene, engine.config
    engine.config = engine.config.model_copy(
        update={"scene_check": "withhold_events", "scene_check_min_snippets": 1}
    )
    hub = Recorder()
    store = LiveEventStore(Database(tmp_path / "db.sqlite"))
    scheduler = _scheduler(hub, store, engine)
    stream = _stream(scheduler, engine, store)
    rng = np.random.default_rng(3)
    try:
        for i, threshold in enumerate([1e12, 1e12, 1e12, 1e-9, 1e-9]):
            engine.scene = scene(threshold)
            scheduler._process(engine, [(stream, _snippet(engine, i, rng))])
    finally:
        engine.scene, engine.config = saved
    notices = [n for m in hub.sent for n in m["events"] if n["type"] != "update"]  # updates: new peaks
    assert [n["type"] for n in notices] == ["start", "end"]
    end = notices[-1]
    assert end["end_reason"] == "scene_unfamiliar"
    # The event ends at the last snippet judged in a familiar view (snippet 1: final in the third cycle).
    assert end["end_s"] == pytest.approx(2 * engine.spec.frames_per_snippet / 25.0)
    assert not stream.events.active
    row = store.get(end["event_id"])
    assert row is not None and row["end_reason"] == "scene_unfamiliar"


class StallingReader:
    """A reader state seen as `live` by the first look of a cycle and `stalled` from the second on: the
    moment a camera goes silent can fall between the scheduler's two uses of the state."""

    end_of_replay = False

    def __init__(self) -> None:
        self.looks = 0

    def status(self) -> tuple[str, str | None]:
        self.looks += 1
        return ("live", None) if self.looks == 1 else ("stalled", "no frame for 1.0 s")


def test_a_state_message_precedes_the_event_end_it_causes(tmp_path, engine: AnalysisEngine) -> None:
    hub = Recorder()
    store = LiveEventStore(Database(tmp_path / "db.sqlite"))
    scheduler = _scheduler(hub, store, engine)
    stream = _stream(scheduler, engine, store, reader=StallingReader())
    scheduler.add(stream)
    rng = np.random.default_rng(4)
    for i in range(2):  # the second cycle's final score opens an event
        scheduler._process(engine, [(stream, _snippet(engine, i, rng))])
    assert stream.events.active
    hub.messages.clear()

    for _ in range(3):  # the run loop's look at the sources, once per cycle
        scheduler._watch_sources()

    kinds = [
        (m.message.state if isinstance(m, StateChanged) else m.notice.end_reason)
        for m in hub.messages
        if isinstance(m, StateChanged | EventChanged)
    ]
    # The first cycle saw and published `live`; the second saw `stalled`, published it, and only then
    # closed the event. Reading the state twice per cycle sent the end first, then `stalled` a cycle later.
    assert kinds == ["live", "stalled", "source_stalled"]
    assert not stream.events.active


def test_live_window_scores_are_what_the_scheduler_sends(tmp_path, engine: AnalysisEngine) -> None:
    """`model.scoring.live_window_scores` (what the CV's live criteria and the live-vs-offline bench compute
    offline) gives each snippet the final score and categories the scheduler's messages carry."""
    hub = Recorder()
    store = LiveEventStore(Database(tmp_path / "db.sqlite"))
    scheduler = _scheduler(hub, store, engine)
    stream = _stream(scheduler, engine, store)
    rng = np.random.default_rng(5)
    snippets = [_snippet(engine, i, rng) for i in range(WINDOW + 3)]  # start-up and full windows
    for snippet in snippets:
        scheduler._process(engine, [(stream, snippet)])
    finals = {m["index"]: m for m in hub.sent if m["status"] == "final"}
    last = [m for m in hub.sent if m["index"] == len(snippets) - 1]
    sent = [finals[i] for i in range(len(snippets) - 1)] + last
    with torch.inference_mode():
        features = engine.backbone.encode_snippets(np.stack([s.frames for s in snippets]))
        scores, weights = live_window_scores(engine.head, features, WINDOW)
    assert [m["score"] for m in sent] == pytest.approx(scores.tolist(), abs=1e-5)
    names = engine.category_names
    for message, expected in zip(sent, weights.tolist(), strict=True):
        assert [message["categories"][n] for n in names] == pytest.approx(expected, abs=1e-5)


def test_live_scene_scores_are_the_offline_ones(tmp_path, engine: AnalysisEngine) -> None:
    """A calibrated camera's scene scores, smoothed over neighbouring snippets: each final one equals what
    `SceneModel.score` gives the same snippets offline, and the newest provisional one a file's last snippet's."""
    db = Database(tmp_path / "db.sqlite")
    scenes = SceneRegistry(SceneStore(db), SceneSettings(learn_s=1.0))
    rng = np.random.default_rng(3)
    describe = engine.scene_descriptor.describe
    normal = describe(np.stack([_snippet(engine, i, rng).frames for i in range(12)]))
    assert scenes.learn("s", normal, 12.0).state == "calibrated"
    hub, store = Recorder(), LiveEventStore(db)
    scheduler = _scheduler(hub, store, engine, scenes=scenes)
    stream = _stream(scheduler, engine, store)
    snippets = [_snippet(engine, i, rng) for i in range(5)]
    for snippet in snippets:
        scheduler._process(engine, [(stream, snippet)])
    model = scenes.model("s")
    assert model is not None and model.settings.smoothing_radius == 1
    regions = describe(np.stack([s.frames for s in snippets]))
    offline = model.score(regions)
    finals = {m["index"]: m["scene_score"] for m in hub.sent if m["status"] == "final"}
    provisional = {m["index"]: m["scene_score"] for m in hub.sent if m["status"] == "provisional"}
    assert sorted(finals) == [0, 1, 2, 3]
    np.testing.assert_allclose([finals[i] for i in range(4)], offline[:4], rtol=1e-4)
    np.testing.assert_allclose(provisional[4], offline[4], rtol=1e-4)
    # Smoothing is what makes them differ from the snippets' own scores.
    own = model.score_novelty(model.novelty(regions))
    assert not np.allclose(offline, own)
