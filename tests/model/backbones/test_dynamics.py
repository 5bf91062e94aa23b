"""The motion-dynamics block (`model.backbones.dynamics`) and the `motion-grid-v2` descriptor that carries it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from model.backbones import dynamics
from model.backbones.identity import BackboneIdentity
from model.backbones.motion import DESCRIPTOR_VERSION, DIM, DYNAMICS_VERSION, MotionBackbone
from model.backbones.registry import BackboneConfig, config_for_identity, load_backbone

H, W = 240, 320


def _background(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(60, 120, (H, W), dtype=np.uint8), (5, 5), 0)


def _to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


def _walker(x0: int, y0: int, frames: int = 16) -> np.ndarray:
    """A disc moving steadily right by 3 px per frame."""
    out = []
    for i in range(frames):
        frame = _background()
        cv2.circle(frame, (x0 + 3 * i, y0), 18, 230, -1)
        out.append(_to_rgb(frame))
    return np.stack(out)


def _scuffle(x0: int, y0: int, frames: int = 16, seed: int = 1) -> np.ndarray:
    """Two discs jerking about in random directions around one spot: erratic, colliding motion."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(frames):
        frame = _background()
        for _disc in range(2):
            dx, dy = rng.integers(-14, 15, 2)
            cv2.circle(frame, (x0 + int(dx), y0 + int(dy)), 18, 230, -1)
        out.append(_to_rgb(frame))
    return np.stack(out)


@pytest.fixture(scope="module")
def dis() -> cv2.DISOpticalFlow:
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)


def test_still_footage_has_no_dynamics(dis: cv2.DISOpticalFlow) -> None:
    still = np.stack([_to_rgb(_background())] * 16)[None]
    vector = dynamics.describe(still, dis)
    assert vector.shape == (1, dynamics.DIM) and vector.dtype == np.float32
    assert np.abs(vector).max() < 0.05


def test_erratic_motion_scores_higher_than_steady_walking_wherever_it_is(dis: cv2.DISOpticalFlow) -> None:
    walk = dynamics.describe(_walker(60, 120)[None], dis)[0]
    left = dynamics.describe(_scuffle(80, 80)[None], dis)[0]
    right = dynamics.describe(_scuffle(240, 170)[None], dis)[0]
    top = slice(0, dynamics.CELL_STATS)  # the most moving cell's statistics
    change, acceleration = 2, 4
    for scuffle in (left, right):
        assert scuffle[top][change] > 2 * walk[top][change]
        assert scuffle[top][acceleration] > 2 * walk[top][acceleration]
    # The pooled block does not depend on where the scuffle is: the top cell's statistics are close.
    assert np.abs(left[top] - right[top]).max() < 0.5 * np.abs(left[top]).max()


def test_short_snippets_are_defined(dis: cv2.DISOpticalFlow) -> None:
    clip = _scuffle(120, 120)
    assert not np.abs(dynamics.describe(clip[None, :1], dis)).any()
    two = dynamics.describe(clip[None, :2], dis)
    assert np.isfinite(two).all() and two[0, 2] == 0  # no magnitude change from one frame pair


def test_v2_is_v1_followed_by_the_dynamics_block() -> None:
    frames = np.stack([_walker(60, 120), _scuffle(200, 120)])
    v1 = MotionBackbone().encode_snippets(frames)
    v2_backbone = MotionBackbone(version=DYNAMICS_VERSION, threads=2)
    v2 = v2_backbone.encode_snippets(frames)
    v2_backbone.close()
    assert v1.shape == (2, DIM) and v2.shape == (2, DIM + dynamics.DIM) == (2, v2_backbone.identity.dim)
    torch.testing.assert_close(v2[:, :DIM], v1)
    assert v2_backbone.identity.weights == DYNAMICS_VERSION
    assert MotionBackbone().identity.weights == DESCRIPTOR_VERSION  # older heads keep their own descriptor


def test_identities_rebuild_their_own_descriptor_version() -> None:
    for version in (DESCRIPTOR_VERSION, DYNAMICS_VERSION):
        backbone = load_backbone(BackboneConfig(name="two_stream", motion_descriptor=version))
        assert backbone.identity.weights.endswith(version)
        rebuilt = config_for_identity(backbone.identity)
        assert rebuilt.motion_descriptor == version
        assert load_backbone(rebuilt).identity == backbone.identity
        backbone.close()
    motion = MotionBackbone(version=DYNAMICS_VERSION).identity
    assert config_for_identity(motion).motion_descriptor == DYNAMICS_VERSION


def test_unknown_versions_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown motion descriptor"):
        MotionBackbone(version="motion-grid-v9")
    # A checkpoint of an unknown version rebuilds today's descriptor, whose identity differs (a mismatch the
    # engine refuses: tests/model/test_inference.py).
    identity = BackboneIdentity(name="motion", architecture="x", weights="motion-grid-v9", dim=1)
    assert load_backbone(config_for_identity(identity)).identity != identity


def test_the_config_offers_exactly_the_descriptor_versions() -> None:
    from model.backbones.motion import VERSIONS
    from model.backbones.registry import MOTION_DESCRIPTORS

    assert set(MOTION_DESCRIPTORS) == set(VERSIONS)
