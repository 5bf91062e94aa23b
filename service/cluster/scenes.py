"""Scene models as an API replica of a cluster sees them: each operation goes to the live worker that runs the
stream, which holds the camera's scene model in memory (and saves it to the shared database every 30 s), so what
an operator uploads, forgets or marks as a false alarm changes the copy that scores the stream, and a read shows
what it has learned up to now. A stream whose worker is not up is served from the database, where its scene was
saved when its worker let it go.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import ray

from model.scene import SceneModel, SceneSettings, SceneStatus
from service.errors import ApiError
from service.scene.registry import SceneRegistry
from service.scene.store import SceneStore

logger = logging.getLogger(__name__)

SCENES_GROUP = "scenes"  # the live worker's concurrency group for these calls
# What a replica may ask a live worker's registry (`LiveWorker.scene`); "snapshot" answers `to_bytes()`.
OPERATIONS = frozenset({"status", "learn", "forget", "learn_false_alarm", "snapshot"})
_TIMEOUT_S = {"status": 10.0, "snapshot": 30.0}
_WRITE_TIMEOUT_S = 120.0  # learning a long upload's snippets


class RoutedScenes(SceneRegistry):
    """`SceneRegistry`'s operations, sent to the stream's live worker (`worker_of(stream_id)`: its actor handle,
    or None when no worker is up to hold the scene). Without one, the database copy is used and not kept here:
    the worker that runs the stream next loads it. Raises `ApiError` 503 (`scene_worker_unavailable`) when the
    worker does not answer in time; nothing is changed here then."""

    def __init__(
        self, store: SceneStore, settings: SceneSettings, worker_of: Callable[[str], Any | None]
    ) -> None:
        super().__init__(store, settings)
        self._worker_of = worker_of
        # Stored statuses by stream, with the save they were read from: a bank is read again only once re-saved.
        self._stored_status: dict[str, tuple[float, SceneStatus]] = {}

    def _routed(self, operation: str, stream_id: str, args: tuple, stored: Callable[[], Any]) -> Any:
        """The stream's worker's answer to `operation`, or `stored()` on the database copy (not kept here) when
        no worker holds the stream."""
        worker = self._worker_of(stream_id)
        if worker is None:
            try:
                return stored()
            finally:
                super().release(stream_id)  # saved if changed; never kept, so never stale
        ref = worker.scene.options(concurrency_group=SCENES_GROUP).remote(operation, stream_id, *args)
        try:
            return ray.get(ref, timeout=_TIMEOUT_S.get(operation, _WRITE_TIMEOUT_S))
        except (ray.exceptions.RayError, TimeoutError) as exc:
            logger.warning("stream %s: scene %s on its live worker failed (%s)", stream_id, operation, exc)
            raise ApiError(
                503,
                "scene_worker_unavailable",
                f"the live worker running stream {stream_id!r} did not answer; try again",
            ) from None

    def status(self, stream_id: str) -> SceneStatus:
        return self._routed("status", stream_id, (), lambda: self.stored_status(stream_id))

    def stored_status(self, stream_id: str) -> SceneStatus:
        """The status of the scene as last saved (what stream listings show, without a call per stream)."""
        saved_at = self.store.updated_at(stream_id)
        if saved_at is None:
            self._stored_status.pop(stream_id, None)
        elif (cached := self._stored_status.get(stream_id)) is not None and cached[0] == saved_at:
            return cached[1]
        try:
            status = super().status(stream_id)
        finally:
            super().release(stream_id)
        if saved_at is not None:
            self._stored_status[stream_id] = (saved_at, status)
        return status

    def snapshot(self, stream_id: str) -> SceneModel:
        answer = self._routed(
            "snapshot", stream_id, (), lambda: super(RoutedScenes, self).snapshot(stream_id)
        )
        return answer if isinstance(answer, SceneModel) else SceneModel.from_bytes(answer, self.settings)

    def learn(self, stream_id: str, regions: np.ndarray, seconds: float, save: bool = True) -> SceneStatus:
        return self._routed(
            "learn",
            stream_id,
            (regions, seconds),
            lambda: super(RoutedScenes, self).learn(stream_id, regions, seconds),
        )

    def forget(self, stream_id: str) -> bool:
        return self._routed("forget", stream_id, (), lambda: super(RoutedScenes, self).forget(stream_id))

    def learn_false_alarm(
        self, stream_id: str, start_s: float, end_s: float, event_id: int | None = None
    ) -> int:
        return self._routed(
            "learn_false_alarm",
            stream_id,
            (start_s, end_s, event_id),
            lambda: super(RoutedScenes, self).learn_false_alarm(stream_id, start_s, end_s, event_id),
        )
