"""The JSON messages a live WebSocket client receives (one model per `type`), and the event notices they carry."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from model.scene_familiarity import SceneCheck
from service.live.readers import Gap, StreamState

EndReason = Literal[
    "scores_below_exit",  # the scores stayed below the exit threshold for `min_gap_s`
    "gap",  # a gap in the scores (dropped frames, an outage) longer than `min_gap_s`
    "source_stalled",  # the source stopped sending frames
    "source_lost",  # the connection failed or the source became unreachable
    "stream_ended",  # a replayed file reached its end
    "scene_unfamiliar",  # the view became unlike the model's training footage (model.scene_familiarity)
    "stream_removed",
    "service_stopped",
    "service_interrupted",  # found open at start-up: the service crashed or was killed
]


class GapInfo(BaseModel):
    """Frames between the previous scored snippet and this one that were not scored."""

    dropped_frames: int = Field(
        description="frames received but not scored (lag) or cut short (disconnection)"
    )
    reasons: list[Literal["lag", "reconnect"]]
    outage_s: float = Field(description="wall-clock seconds the source was unreachable, for `reconnect`")

    @classmethod
    def of(cls, gap: Gap | None) -> GapInfo | None:
        if gap is None:
            return None
        return cls(
            dropped_frames=gap.dropped_frames, reasons=list(gap.reasons), outage_s=round(gap.outage_s, 3)
        )


class EventNotice(BaseModel):
    type: Literal["start", "update", "end"] = Field(description="`update`: an open event reached a new peak")
    event_id: int
    start_s: float = Field(description="media time of the event's first snippet")
    end_s: float | None = Field(default=None, description="media time the event ended (`end` only)")
    started_at: float = Field(description="wall clock (Unix seconds) of the event's first snippet")
    ended_at: float | None = None
    peak_score: float
    peak_s: float | None = Field(default=None, description="media time of the peak snippet's start")
    dominant_category: str | None = None
    categories: dict[str, float] = Field(default_factory=dict)
    end_reason: EndReason | None = Field(default=None, description="why it ended (`end` only)")


class SnippetMessage(BaseModel):
    type: Literal["snippet"] = "snippet"
    stream_id: str
    index: int = Field(description="snippet i covers the stream's frames [16 i, 16 i + 16)")
    status: Literal["provisional", "final"] = Field(
        description="the newest snippet is provisional (MoTAR reads the next one); it is re-sent final one snippet later"
    )
    start_s: float
    end_s: float
    captured_at: float = Field(description="wall clock (Unix seconds) when the snippet's last frame was read")
    wall_clock: float = Field(description="wall clock (Unix seconds) when this message was produced")
    latency_s: float = Field(description="from the capture of the snippet's last frame to this message")
    score: float = Field(
        description="the fused score events use (model.scene.fusion); the head's alone while the camera's scene "
        "model is learning"
    )
    head_score: float | None = Field(default=None, description="RefineVAD's anomaly score of the snippet")
    scene_score: float | None = Field(
        default=None,
        description="the camera's scene novelty (model.scene; 0.5 = as rare as its 1 % most unusual normal "
        "footage); null while the camera's scene model is learning or scene models are off",
    )
    categories: dict[str, float] = Field(description="category distribution of the window ending here")
    dominant_category: str | None = Field(
        description="the head's most likely category; null when only the camera's scene model finds the snippet "
        "unusual (something the head does not name: unusual for this camera, without a category)"
    )
    gap: GapInfo | None = Field(default=None, description="what was skipped just before this snippet")
    degraded: bool = Field(
        default=False, description="a frame of this snippet was damaged or lost; it cannot open an event"
    )
    scene: SceneCheck | None = Field(
        default=None,
        description="is the footage of this snippet's trailing window (the last 8 snippets) like the model's "
        "training footage (model.scene_familiarity); None when the model is not calibrated. While it is not, "
        "its scores open or extend no event, and an open event ends (`scene_unfamiliar`), unless "
        "SCENE_CHECK=report",
    )
    events: list[EventNotice] = Field(
        default_factory=list, description="events that started, peaked or ended here"
    )


class EventMessage(BaseModel):
    """An event that ended without a new snippet to carry it: the stream stopped, stalled or lost its source."""

    type: Literal["event"] = "event"
    stream_id: str
    index: int = Field(description="the last scored snippet, where the event was closed")
    event: EventNotice
    wall_clock: float


class StateMessage(BaseModel):
    type: Literal["state"] = "state"
    stream_id: str
    state: StreamState
    last_error: str | None = None
    wall_clock: float


class NoticeMessage(BaseModel):
    type: Literal["notice"] = "notice"
    code: Literal["dropped", "replay_gap", "stream_removed"]
    message: str
    resume_from: int | None = Field(default=None, description="the snippet index to resume from (`?since=`)")
