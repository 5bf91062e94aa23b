"""What decoding a video really produced, as opposed to what its container announced.

A source fills a `DecodeReport` while it is read: frames decoded, frames the decoder flagged as damaged or that
went missing (a gap in the presentation timestamps), picture-size changes and timestamp discontinuities. Analysis
results carry it as their `decode` object, so a truncated, lossy or re-encoded input never passes for a clean one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field


class GeometryChange(BaseModel):
    frame: int = Field(description="index of the first decoded frame with the new picture size")
    width: int
    height: int


class TimestampJump(BaseModel):
    frame: int = Field(description="index of the first decoded frame after the discontinuity")
    from_s: float = Field(description="the stream's own timestamp (seconds) of the frame before the jump")
    to_s: float = Field(description="the stream's own timestamp (seconds) of the frame after it")


Clock = Literal["timestamps", "frame_rate", "assumed_rate"]


class DecodeReport(BaseModel):
    """Counts and changes seen while decoding; filled in as frames are read, final once the source is exhausted."""

    frames_announced: int | None = Field(
        default=None, description="frame count the container claims (null when absent or implausible)"
    )
    frames_decoded: int = Field(default=0, description="frames the decoder actually delivered")
    truncated: bool = Field(
        default=False,
        description="the input ended early: fewer frames than announced, or the data stopped mid-stream",
    )
    decode_errors: int = Field(
        default=0, description="frames the decoder reported as damaged plus frames lost (timestamp gaps)"
    )
    damaged_frames: int = Field(default=0, description="decoded frames flagged corrupt by the decoder")
    lost_frames: int = Field(
        default=0, description="frames missing between decoded ones, from timestamp gaps"
    )
    repeated_frames: int = Field(
        default=0,
        description="frames the container codes as repeats of the previous picture (AVI null frames: a "
        "timestamp gap there is by design), neither decoded nor lost",
    )
    geometry_changes: list[GeometryChange] = Field(
        default_factory=list,
        description="picture-size changes after the first frame; frames are letterboxed into the first size",
    )
    timestamp_jumps: list[TimestampJump] = Field(
        default_factory=list,
        description="discontinuities in the stream's timestamps; the media clock runs on across them",
    )
    display_rotation: Literal[0, 90, 180, 270] = Field(
        default=0,
        description="counter-clockwise degrees the first frame was turned to show it upright (its display "
        "matrix or display-orientation SEI); width, height and geometry changes are the displayed sizes",
    )
    clock: Clock = Field(
        default="timestamps",
        description="what places frames in time: their own timestamps, the stream's frame rate, or an assumed "
        "rate (no usable timing in the input)",
    )


@dataclass(frozen=True, slots=True)
class FrameBatch:
    """Consecutive decoded frames with their media times and damage flags.

    `frames` [k, H, W, 3] uint8 RGB; `times_s` [k] float64 seconds on a monotonic media clock that starts at 0;
    `damaged` [k] bool, true for a frame the decoder flagged or that follows lost frames.
    """

    frames: np.ndarray
    times_s: np.ndarray
    damaged: np.ndarray

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @classmethod
    def concat(cls, parts: list[FrameBatch]) -> FrameBatch:
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.frames for p in parts]),
            np.concatenate([p.times_s for p in parts]),
            np.concatenate([p.damaged for p in parts]),
        )
