"""The one interface every feature backbone implements: snippets of frames in, one vector per snippet out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

from model.backbones.identity import BackboneIdentity


class Backbone(ABC):
    """Turns snippets of RGB uint8 frames `[S, F, H, W, 3]` into snippet features `[S, D]` (float32, `device`).

    A snippet's feature depends only on that snippet's frames (and caption, with a text branch), never on
    earlier calls, so a caller may batch snippets from many videos or streams into one call.
    """

    identity: BackboneIdentity
    device: torch.device
    # Numeric precision of the computation (`fp32` is the reference; `fp16`/`bf16` are reduced-precision paths).
    precision: str = "fp32"

    @property
    def path(self) -> str:
        """What computes the features, for reports: the precision, or an accelerated runtime's label
        (e.g. `onnxruntime (CPUExecutionProvider)`)."""
        return self.precision

    @property
    def dim(self) -> int:
        return self.identity.dim

    @property
    def text_branch(self) -> bool:
        return self.identity.text_branch

    @abstractmethod
    def encode_snippets(
        self, frames: np.ndarray | torch.Tensor, captions: Sequence[str] | None = None
    ) -> torch.Tensor:
        """`[S, F, H, W, 3]` uint8 RGB -> `[S, dim]` float32 on `device`.

        `captions` (one per snippet) are required when the backbone has a text branch, ignored otherwise.
        """

    def reference_variant(self) -> Backbone | None:
        """The same backbone on its reference path (same weights, fp32, no fused or compiled parts) when this one
        runs an accelerated path, else None. `model.acceleration` checks this backbone against it at start-up
        and serves the reference instead when they disagree; a backbone with a reduced-precision or otherwise
        accelerated mode must override this."""
        return None

    def captions_for(self, video: str) -> list[str]:
        """Per-snippet captions of `video` from the configured captions file (text branch only)."""
        raise KeyError(f"{type(self).__name__} has no text branch, so no captions for {video!r}")

    def close(self) -> None:  # noqa: B027 - optional hook, most backbones hold nothing to release
        """Release what the backbone holds (models, thread pools)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity.key()}, device={self.device})"


def encode_frame_chunks(
    frames: np.ndarray | torch.Tensor,
    device: torch.device,
    batch_size: int,
    encode: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
) -> torch.Tensor:
    """`[N, H, W, 3]` uint8 -> `[N, dim]` float32 on `device`: `encode` (uint8 frames on the device -> features)
    on `batch_size` frames at a time. On CUDA the frames are copied once into page-locked memory (cached by
    torch's host allocator), so each chunk's upload is asynchronous and overlaps the encoder's previous chunk."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if device.type == "cuda" and not tensor.is_cuda and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    outputs = [encode(chunk.to(device, non_blocking=True)).float() for chunk in tensor.split(batch_size)]
    return torch.cat(outputs) if outputs else torch.zeros((0, dim), device=device)


def check_snippet_frames(frames: np.ndarray | torch.Tensor) -> tuple[int, int, int, int]:
    """Validate the `[S, F, H, W, 3]` uint8 layout every backbone takes; returns (S, F, H, W)."""
    shape = tuple(frames.shape)
    dtype_ok = frames.dtype == (torch.uint8 if isinstance(frames, torch.Tensor) else np.uint8)
    if len(shape) != 5 or shape[-1] != 3 or not dtype_ok:
        raise ValueError(
            f"snippet frames must be uint8 [snippets, frames, height, width, 3] RGB, "
            f"got {frames.dtype} {list(shape)}"
        )
    return shape[0], shape[1], shape[2], shape[3]


def grey_copies(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[S, F, H, W, 3] uint8 RGB -> [S, F, size[1], size[0]] uint8 grey copies, `size` = (width, height), area
    interpolation. A reduction treats the frames as one tall image: each output row's source rows then lie
    within one frame, so the result is the per-frame one exactly, in two OpenCV calls instead of two per frame
    (about 1.7x faster on 360x240 snippets). An enlargement interpolates across rows, so it goes frame by frame."""
    s, f, h, w = frames.shape[:4]
    if h >= size[1] and w >= size[0]:
        grey = cv2.cvtColor(np.ascontiguousarray(frames).reshape(s * f * h, w, 3), cv2.COLOR_RGB2GRAY)
        tall = cv2.resize(grey, (size[0], s * f * size[1]), interpolation=cv2.INTER_AREA)
        return tall.reshape(s, f, size[1], size[0])
    grey = np.stack(
        [
            cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
            for frame in frames.reshape(s * f, *frames.shape[2:])
        ]
    )
    return grey.reshape(s, f, size[1], size[0])
