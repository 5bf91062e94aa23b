"""Fitting a picture of another size into a fixed frame without distorting it (letterbox / pillarbox)."""

from __future__ import annotations

import cv2
import numpy as np


def fit_size(width: int, height: int, box_width: int, box_height: int) -> tuple[int, int]:
    """The largest (width, height) with the picture's aspect ratio that fits in the box (each at least 1)."""
    scale = min(box_width / width, box_height / height)
    return max(1, min(box_width, round(width * scale))), max(1, min(box_height, round(height * scale)))


def letterbox_into(image: np.ndarray, out: np.ndarray) -> None:
    """Scale `image` [h, w, C] to fit `out` [H, W, C] keeping its aspect ratio, centred, with black borders.

    Both arrays hold the same channel layout; `out` is written in place.
    """
    box_h, box_w = out.shape[:2]
    w, h = fit_size(image.shape[1], image.shape[0], box_w, box_h)
    scaled = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    top, left = (box_h - h) // 2, (box_w - w) // 2
    out[:] = 0
    out[top : top + h, left : left + w] = scaled.reshape(h, w, -1)
