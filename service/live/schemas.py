"""Request and response models of the streams and events API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from model.scene import SceneState
from model.scene_familiarity import SceneCheck
from service.live.readers import StreamState


class EventPolicyOverrides(BaseModel):
    """Per-stream event settings; anything left out takes the service's default."""

    model_config = ConfigDict(extra="forbid")

    enter_threshold: float | None = Field(
        default=None, ge=0, le=1, description="a score this high opens an event"
    )
    exit_threshold: float | None = Field(
        default=None, ge=0, le=1, description="the event closes once scores stay below this"
    )
    min_duration_s: float | None = Field(
        default=None, ge=0, le=3600, description="shorter events are never announced"
    )
    min_gap_s: float | None = Field(default=None, ge=0, le=3600, description="time below exit before closing")
    cooldown_s: float | None = Field(default=None, ge=0, le=86400, description="quiet time after an event")

    @model_validator(mode="after")
    def _ordered(self) -> EventPolicyOverrides:
        if (
            self.enter_threshold is not None
            and self.exit_threshold is not None
            and self.exit_threshold > self.enter_threshold
        ):
            raise ValueError("exit_threshold must not exceed enter_threshold")
        return self


class StreamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="rtsp://, rtsps://, http(s):// (or a local file when `file` is an allowed scheme); "
        "credentials in the URL are kept but never shown",
    )
    name: str = Field(min_length=1, max_length=200, description="a label for people")
    events: EventPolicyOverrides = Field(default_factory=EventPolicyOverrides)
    loop: bool = Field(default=False, description="file replay only: start again at the end")


class EventPolicyView(BaseModel):
    enter_threshold: float
    exit_threshold: float
    min_duration_s: float
    min_gap_s: float
    cooldown_s: float


class StreamView(BaseModel):
    id: str
    name: str
    url: str = Field(description="the source URL with credentials masked")
    state: StreamState
    last_error: str | None = Field(default=None, description="why the last connection attempt or read failed")
    note: str | None = None
    created_at: datetime
    connected_since: datetime | None = None
    width: int | None = None
    height: int | None = None
    source_fps: float | None = Field(default=None, description="frame rate the source reports")
    fps_in: float = Field(description="frames per second received, over the last seconds")
    fps_processed: float = Field(description="frames per second scored, over the last seconds")
    frames_in: int
    snippets_processed: int
    dropped_frames: int = Field(
        description="frames received but not scored (processing lagged, or cut short)"
    )
    decode_errors: int = Field(
        default=0, description="frames the decoder reported damaged, or lost (file replay; OpenCV streams: 0)"
    )
    connect_attempts: int
    reconnects: int
    last_score: float | None = None
    last_latency_s: float | None = Field(default=None, description="capture of the last snippet to its score")
    scene: SceneCheck | None = Field(
        default=None,
        description="the scene-familiarity verdict at the newest snippet (None: not scored yet, or the model is "
        "not calibrated); while unfamiliar its scores open or extend no event (unless SCENE_CHECK=report)",
    )
    scene_state: SceneState | None = Field(
        default=None,
        description="the camera's own scene model (model.scene): `none` (nothing learned yet), `learning`, "
        "`calibrated`; null when scene models are off",
    )
    scene_progress: float | None = Field(
        default=None, ge=0, le=1, description="learning progress 0-1 (1 once calibrated); null when off"
    )
    clients: int = Field(description="connected WebSocket clients")
    events: EventPolicyView


class StreamList(BaseModel):
    items: list[StreamView]
    total: int


class EventView(BaseModel):
    id: int
    source_kind: str = Field(description="`stream` (live) or `job` (file analysis)")
    source_id: str
    stream_name: str | None = Field(
        default=None, description="the stream's name when the event happened (live)"
    )
    status: str = Field(
        description="`open`, `closed`, or `interrupted` (the service stopped while it was open)"
    )
    start_s: float = Field(description="media time of the start")
    end_s: float | None = None
    started_at: datetime | None = Field(default=None, description="wall clock of the start (live events)")
    ended_at: datetime | None = None
    created_at: datetime
    peak_score: float
    mean_score: float | None = None
    dominant_category: str | None = None
    categories: dict[str, float] = Field(default_factory=dict)
    end_reason: str | None = Field(
        default=None,
        description="live events: why it ended (scores_below_exit, gap, source_stalled, source_lost, "
        "stream_ended, stream_removed, scene_unfamiliar, service_stopped, service_interrupted); null while open",
    )
    snapshot_url: str | None = Field(default=None, description="JPEG of the peak (live events that have one)")
    clip_url: str | None = Field(default=None, description="MP4 clip, once `clip_status` is `ready`")
    clip_status: str | None = Field(
        default=None, description="`recording`, `ready`, `failed` or `expired` (retention); None = no clip"
    )
    verdict: Literal["false_alarm", "confirmed"] | None = Field(
        default=None, description="an operator's verdict (`POST /events/{id}/feedback`); null: none given"
    )
    verdict_category: str | None = Field(default=None, description="the kind the operator named, if any")


class EventList(BaseModel):
    items: list[EventView]
    total: int
    limit: int
    offset: int


def event_view(row: dict[str, Any], media: Any = None, feedback: dict[str, Any] | None = None) -> EventView:
    """`media`: the event's `service.event_media.store.MediaRecord`, if it has one; `feedback`: its row of
    `service.scene.store.FeedbackStore`, if an operator gave a verdict."""
    from service.schemas import timestamp

    event_id = row["id"]
    has_snapshot = media is not None and media.snapshot_bytes > 0
    return EventView(
        id=event_id,
        source_kind=row["source_kind"],
        source_id=row["source_id"],
        stream_name=row.get("source_name"),
        snapshot_url=f"/events/{event_id}/snapshot.jpg" if has_snapshot else None,
        clip_url=f"/events/{event_id}/clip.mp4"
        if media is not None and media.clip_status == "ready"
        else None,
        clip_status=media.clip_status if media is not None else None,
        status=row.get("status") or "closed",
        start_s=row["start_s"],
        end_s=row["end_s"],
        started_at=timestamp(row.get("started_at")),
        ended_at=timestamp(row.get("ended_at")),
        created_at=timestamp(row["created_at"]),
        peak_score=row["peak_score"],
        mean_score=row["mean_score"],
        dominant_category=row["dominant_category"],
        categories=row["categories"],
        end_reason=row.get("end_reason"),
        verdict=feedback["verdict"] if feedback is not None else None,
        verdict_category=feedback["category"] if feedback is not None else None,
    )
