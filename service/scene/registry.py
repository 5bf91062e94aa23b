"""The service's scene models: one per camera, loaded from and saved to the database, learned from live footage
and uploads, adapted continuously, and corrected by operators' false alarms.

Continuous adaptation cannot learn the anomaly it should report: a calibrated camera's snippet joins its bank only
`adapt_delay` snippets later, and only if its fused score and those of every snippet around it since stayed below
`adapt_below` (0.3, against the 0.5 event threshold). While a camera is still learning, every undamaged snippet is
learned, except those the head (when it knows the view) scores at or above the event threshold.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from model.scene import NoveltySmoother, SceneModel, SceneSettings, SceneStatus
from model.scene.descriptor import DIM
from service.scene.store import EventRegionStore, SceneStore

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 30.0
RECENT_SNIPPETS = 600  # 16 min at 10 fps with 16-frame snippets; 4.1 MB per camera
# A closed event keeps at most this many of its snippets' descriptors (evenly spaced): 1.8 MB.
EVENT_SNIPPETS = 256
# A region vector (descriptor + position, float32) and its priority, snippet number and region.
VECTOR_BYTES = 4 * (DIM + 2) + 8 + 8 + 2


@dataclass
class _Camera:
    model: SceneModel
    dirty: bool = False
    pending: deque = field(default_factory=deque)  # (regions [R, d], fused score, seconds)
    # The newest snippets' (start_s, end_s, regions), so an operator's false alarm can be learned.
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_SNIPPETS))


def scene_settings(learn_s: float, max_mb: float) -> SceneSettings:
    return SceneSettings(learn_s=learn_s, max_vectors=max(48, int(max_mb * 1024 * 1024 / VECTOR_BYTES)))


class SceneRegistry:
    """Thread-safe: the live scheduler and API requests use it at once."""

    def __init__(self, store: SceneStore, settings: SceneSettings) -> None:
        self.store = store
        self.event_regions = EventRegionStore(store.db)
        self.settings = settings
        self._cameras: dict[str, _Camera] = {}
        self._lock = threading.RLock()
        self._last_flush = time.monotonic()

    def _camera(self, stream_id: str, create: bool = True) -> _Camera | None:
        camera = self._cameras.get(stream_id)
        if camera is not None:
            return camera
        data = self.store.load(stream_id)
        if data is not None:
            try:
                camera = _Camera(SceneModel.from_bytes(data, self.settings))
            except ValueError as exc:
                logger.warning("stream %s: stored scene model not used (%s); learning again", stream_id, exc)
        if camera is None:
            if not create:
                return None
            camera = _Camera(SceneModel(self.settings))
        self._cameras[stream_id] = camera
        return camera

    def model(self, stream_id: str) -> SceneModel | None:
        """The camera's scene model, or None when it has none (neither learning nor calibrated)."""
        with self._lock:
            camera = self._camera(stream_id, create=False)
            return None if camera is None else camera.model

    def snapshot(self, stream_id: str) -> SceneModel:
        """A copy of the camera's scene model to score a file with (a new, learning one when it has none)."""
        with self._lock:
            camera = self._camera(stream_id, create=False)
            if camera is None:
                return SceneModel(self.settings)
            return SceneModel.from_bytes(camera.model.to_bytes(), self.settings)

    def status(self, stream_id: str) -> SceneStatus:
        with self._lock:
            camera = self._camera(stream_id, create=False)
            if camera is None:
                return SceneStatus(
                    state="none",
                    snippets_learned=0,
                    footage_s=0.0,
                    learn_s=self.settings.learn_s,
                    progress=0.0,
                    bank_vectors=0,
                    bank_snippets=0,
                    bank_bytes=0,
                    pinned_snippets=0,
                    threshold=None,
                    updated_at=None,
                )
            return camera.model.status()

    def learn(self, stream_id: str, regions: np.ndarray, seconds: float, save: bool = True) -> SceneStatus:
        """Learn footage known to be normal (an upload): `[S, R, d]` lasting `seconds`; saved at once."""
        with self._lock:
            camera = self._camera(stream_id)
            assert camera is not None
            camera.model.learn(regions, seconds)
            camera.dirty = True
            if save:
                self._save(stream_id, camera)
            return camera.model.status()

    def mark_normal(self, stream_id: str, regions: np.ndarray) -> None:
        """An operator's false alarm: its snippets join the bank at once, pinned; saved at once."""
        with self._lock:
            camera = self._camera(stream_id)
            assert camera is not None
            camera.model.mark_normal(regions)
            camera.dirty = True
            self._save(stream_id, camera)

    def _held(self, camera: _Camera, start_s: float, end_s: float) -> list[np.ndarray]:
        return [r for a, b, r in camera.recent if b >= start_s and a <= end_s]

    def keep_event(self, stream_id: str, event_id: int, start_s: float, end_s: float) -> int:
        """A live event closed: store the descriptors of its held snippets `[start_s, end_s]` (this worker's
        media seconds) with the event, so a false alarm given later, after a restart or on another worker, can
        still be learned. At most `EVENT_SNIPPETS`, evenly spaced; returns how many were stored."""
        with self._lock:
            camera = self._camera(stream_id, create=False)
            held = [] if camera is None else self._held(camera, start_s, end_s)
        if not held:
            return 0
        if len(held) > EVENT_SNIPPETS:
            held = [held[i] for i in np.linspace(0, len(held) - 1, EVENT_SNIPPETS).round().astype(int)]
        self.event_regions.put(event_id, stream_id, np.stack(held))
        return len(held)

    def learn_false_alarm(
        self, stream_id: str, start_s: float, end_s: float, event_id: int | None = None
    ) -> int:
        """Learn an event's snippets as normal, pinned; returns how many. They are those stored with the event
        (`keep_event`), else the held snippets of `[start_s, end_s]` (media seconds); 0 when neither has any."""
        stored = None if event_id is None else self.event_regions.get(event_id)
        with self._lock:
            if stored is not None and len(stored):
                self.mark_normal(stream_id, stored)
                return len(stored)
            camera = self._camera(stream_id, create=False)
            if camera is None:
                return 0
            held = self._held(camera, start_s, end_s)
            if held:
                self.mark_normal(stream_id, np.stack(held))
            return len(held)

    def forget(self, stream_id: str) -> bool:
        """Forget the camera's scene (it was moved): returns whether there was one."""
        with self._lock:
            had = self._cameras.pop(stream_id, None) is not None
            self.event_regions.delete_for_stream(stream_id)
            return self.store.delete(stream_id) or had

    def live_scores(
        self, stream_id: str, regions: np.ndarray, smoother: NoveltySmoother
    ) -> tuple[float | None, float | None]:
        """A live snippet's descriptors `[R, d]` -> (its provisional scene score, the previous snippet's final
        one), smoothed over the stream's run of snippets by `smoother` (the stream's own, so live gives the
        offline scores: `SceneModel.score`); None while the camera is learning or has no scene."""
        with self._lock:
            camera = self._camera(stream_id, create=False)
            model = None if camera is None else camera.model
            calibrated = model is not None and model.state == "calibrated"
            novelty = float(model.novelty(regions[None])[0]) if calibrated else None
            provisional, final = smoother.push(novelty)
            if not calibrated:
                return None, None

            def scored(n: float | None) -> float | None:
                return None if n is None else float(model.score_novelty(np.array([n]))[0])

            return scored(provisional), scored(final)

    def observe(
        self,
        stream_id: str,
        regions: np.ndarray,
        seconds: float,
        fused: float,
        head_flags: bool,
        start_s: float = 0.0,
        end_s: float = 0.0,
    ) -> None:
        """A live snippet `[R, d]` was scored: learn it (learning), or queue it for adaptation (calibrated).
        `head_flags`: the head, on a view it knows, scored it at or above the event threshold."""
        with self._lock:
            camera = self._camera(stream_id)
            assert camera is not None
            camera.recent.append((start_s, end_s, regions))
            model = camera.model
            if model.state == "learning":
                if not head_flags:
                    model.learn(regions[None], seconds)
                    camera.dirty = True
                return
            s = self.settings
            camera.pending.append((regions, fused, seconds))
            if len(camera.pending) <= s.adapt_delay:
                return
            oldest = camera.pending.popleft()
            if max(item[1] for item in (oldest, *camera.pending)) < s.adapt_below:
                model.learn(oldest[0][None], oldest[2])
                camera.dirty = True

    def _save(self, stream_id: str, camera: _Camera) -> None:
        self.store.save(stream_id, camera.model.state, camera.model.to_bytes())
        camera.dirty = False

    def flush(self, force: bool = False) -> None:
        """Save changed scene models (every `FLUSH_INTERVAL_S`, or now with `force`). A failing write is logged
        and retried at the next flush; nothing learned is dropped."""
        if not force and time.monotonic() - self._last_flush < FLUSH_INTERVAL_S:
            return
        self._last_flush = time.monotonic()
        with self._lock:
            dirty = [(sid, camera) for sid, camera in self._cameras.items() if camera.dirty]
        for stream_id, camera in dirty:
            try:
                with self._lock:
                    self._save(stream_id, camera)
            except Exception:
                logger.exception("stream %s: saving its scene model failed; retrying later", stream_id)

    def release(self, stream_id: str) -> None:
        """Save and drop the in-memory copy (the stream moved to another worker or stopped)."""
        with self._lock:
            camera = self._cameras.pop(stream_id, None)
            if camera is not None and camera.dirty:
                self._save(stream_id, camera)

    def states(self) -> dict[str, int]:
        """Cameras in memory per scene state, their count (`cameras`) and their banks' bytes (`bytes`)."""
        with self._lock:
            counts = {"learning": 0, "calibrated": 0, "bytes": 0, "cameras": len(self._cameras)}
            for camera in self._cameras.values():
                status = camera.model.status()
                counts[status.state] += 1
                counts["bytes"] += status.bank_bytes
            return counts
