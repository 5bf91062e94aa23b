"""Request and response models of the HTTP API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from model.acceleration import AccelerationReport
from model.inference import AnalysisResult, ModelInfo, VideoInfo


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer of the API has this shape."""

    error: str = Field(description="stable machine-readable code, e.g. `not_a_video`, `payload_too_large`")
    message: str = Field(description="what went wrong, for people")
    detail: Any = Field(default=None, description="structured detail where useful (e.g. validation problems)")


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


def timestamp(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


class JobSummary(BaseModel):
    id: str
    status: JobStatus
    progress: float = Field(ge=0.0, le=1.0, description="fraction of the video analysed")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    filename: str = Field(description="the uploaded file's name as the client sent it")
    size_bytes: int
    frame_scores: bool = Field(description="whether frame-level scores were requested")
    snapshots: bool = Field(default=False, description="whether event snapshots were requested")
    video: VideoInfo | None = Field(
        default=None, description="what the decoder found when the file was probed"
    )
    error: str | None = Field(default=None, description="why the job failed or was cancelled")
    note: str | None = Field(default=None, description="e.g. that the job was resumed after a restart")
    attempts: int = Field(description="how many times a worker started this job")


class EventSnapshot(BaseModel):
    """A JPEG of the frame in the middle of an event's highest-scoring snippet."""

    event: int = Field(description="index of the event in `result.events`")
    peak_s: float = Field(description="media time of the frame, seconds")
    frame: int = Field(description="index of the frame in the video")
    width: int
    height: int
    jpeg_base64: str = Field(description="the JPEG file, base64-encoded (at most 640 pixels wide)")


class Job(JobSummary):
    result: AnalysisResult | None = Field(default=None, description="present once the job has succeeded")
    event_snapshots: list[EventSnapshot] | None = Field(
        default=None,
        description="with `snapshots=true`: one per event (up to 100), once the job has succeeded",
    )


class JobList(BaseModel):
    items: list[JobSummary]
    total: int = Field(description="jobs matching the filter, over all pages")
    limit: int
    offset: int


class Health(BaseModel):
    status: str = Field(description="`ok` whenever the process answers")
    version: str


class Readiness(BaseModel):
    ready: bool = Field(description="model loaded, warmed up, and the job workers running")
    state: str = Field(description="`loading`, `ready` or `failed`")
    error: str | None = Field(default=None, description="why the model could not be loaded")
    model: ModelInfo | None = None
    device: str | None = None
    queue_depth: int = 0
    acceleration: AccelerationReport | None = Field(
        default=None,
        description="which path serves each stage (shift, head, backbone) and why: an accelerated path only "
        "after matching its reference on the device at start-up",
    )
