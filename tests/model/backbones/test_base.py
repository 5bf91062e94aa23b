"""grey_copies: the one-call path equals OpenCV frame by frame, for reductions and enlargements."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from model.backbones.base import grey_copies


def frame_by_frame(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    s, f = frames.shape[:2]
    grey = [
        cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
        for frame in frames.reshape(s * f, *frames.shape[2:])
    ]
    return np.stack(grey).reshape(s, f, size[1], size[0])


@pytest.mark.parametrize("height, width", [(240, 360), (720, 1280), (241, 353), (158, 238), (100, 400)])
@pytest.mark.parametrize("size", [(240, 160), (160, 120), (240, 180)])
def test_grey_copies_equal_the_per_frame_resize(height: int, width: int, size: tuple[int, int]) -> None:
    frames = np.random.default_rng(height + width).integers(0, 256, (2, 5, height, width, 3), dtype=np.uint8)
    out = grey_copies(frames, size)
    assert out.shape == (2, 5, size[1], size[0]) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, frame_by_frame(frames, size))
