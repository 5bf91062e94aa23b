"""SceneModel on a synthetic camera: squares walking slowly along a band of the view are its normal."""

from __future__ import annotations

import numpy as np
import pytest

from model.scene import NoveltySmoother, SceneDescriptor, SceneModel, SceneSettings, smooth_novelty
from model.scene.descriptor import DIM, REGIONS

W, H, F = 180, 120, 16
SNIPPET_S = 1.6
DESCRIPTOR = SceneDescriptor()


def footage(snippets: int, seed: int, fast: bool = False) -> np.ndarray:
    """Descriptors `[S, R, d]` of `snippets` snippets: two textured squares walk right at 1 px/frame along the
    middle band; with `fast`, one of them moves at 6 px/frame instead (a cyclist among walkers)."""
    rng = np.random.default_rng(seed)
    background = np.random.default_rng(0).integers(60, 110, (H, W), dtype=np.uint8)
    frames = np.repeat(background[None, None], snippets * F, axis=1)[0].copy()
    for s in range(snippets):
        for walker in range(2):
            x0, y0 = rng.integers(10, 90), rng.integers(45, 65)
            speed = 6.0 if fast and walker == 0 else 1.0 + 0.2 * rng.random()
            pattern = rng.integers(170, 255, (12, 12), dtype=np.uint8)
            for f in range(F):
                x = min(int(x0 + f * speed), W - 12)
                frames[s * F + f, y0 : y0 + 12, x : x + 12] = pattern
    rgb = np.repeat(frames[..., None], 3, axis=-1).reshape(snippets, F, H, W, 3)
    return DESCRIPTOR.describe(rgb)


@pytest.fixture(scope="module")
def normal() -> np.ndarray:
    return footage(48, seed=1)


@pytest.fixture(scope="module")
def calibrated(normal: np.ndarray) -> SceneModel:
    model = SceneModel(SceneSettings(learn_s=40 * SNIPPET_S))
    model.learn(normal, len(normal) * SNIPPET_S)
    return model


def test_learning_until_learn_s_then_calibrated(normal: np.ndarray) -> None:
    model = SceneModel(SceneSettings(learn_s=20 * SNIPPET_S))
    assert model.state == "learning" and model.score(normal[:2]) is None
    assert not model.learn(normal[:10], 10 * SNIPPET_S)
    status = model.status()
    assert status.state == "learning" and status.progress == pytest.approx(0.5) and status.threshold is None
    with pytest.raises(ValueError, match="learning"):
        model.novelty(normal[:1])
    assert model.learn(normal[10:20], 10 * SNIPPET_S)
    status = model.status()
    assert status.state == "calibrated" and status.progress == 1.0 and status.threshold is not None
    assert status.snippets_learned == 20 and status.bank_snippets == 20 and status.bank_bytes > 0


def test_more_normal_footage_is_rarely_at_half(calibrated: SceneModel) -> None:
    scores = calibrated.score(footage(40, seed=2))
    assert scores is not None and scores.shape == (40,)
    assert ((scores >= 0) & (scores < 1)).all()
    assert np.mean(scores >= 0.5) <= 0.05


def test_novel_motion_scores_high(calibrated: SceneModel) -> None:
    normal = calibrated.score(footage(20, seed=3))
    novel = calibrated.score(footage(10, seed=4, fast=True))
    assert normal is not None and novel is not None
    assert np.mean(novel >= 0.5) >= 0.8
    assert novel.min() > np.median(normal)


def test_mark_normal_stops_the_same_footage_firing(normal: np.ndarray) -> None:
    model = SceneModel(SceneSettings(learn_s=40 * SNIPPET_S))
    model.learn(normal, len(normal) * SNIPPET_S)
    alarm = footage(3, seed=5, fast=True)
    before = model.score(alarm)
    assert before is not None and (before >= 0.5).all()
    model.mark_normal(alarm)
    after = model.score(alarm)
    assert after is not None and (after < 0.5).all()
    assert model.status().pinned_snippets == 3


def test_bytes_round_trip_scores_identically(calibrated: SceneModel) -> None:
    query = footage(6, seed=6, fast=True)
    copy = SceneModel.from_bytes(calibrated.to_bytes())
    np.testing.assert_array_equal(copy.score(query), calibrated.score(query))
    assert copy.status().model_dump(exclude={"updated_at"}) == calibrated.status().model_dump(
        exclude={"updated_at"}
    )
    learning = SceneModel(SceneSettings(learn_s=1e6))
    learning.learn(query, 6 * SNIPPET_S)
    restored = SceneModel.from_bytes(learning.to_bytes())
    assert restored.state == "learning" and restored.status().bank_snippets == 6


def test_another_descriptor_version_is_refused(
    calibrated: SceneModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = calibrated.to_bytes()
    monkeypatch.setattr("model.scene.scene_model.VERSION", "scene-grid-v0")
    with pytest.raises(ValueError, match="descriptor 'scene-grid-v2'"):
        SceneModel.from_bytes(data)


def test_wrong_descriptor_shape_is_refused(calibrated: SceneModel) -> None:
    with pytest.raises(ValueError, match=rf"\[S, {REGIONS}, {DIM}\]"):
        calibrated.score(np.zeros((2, REGIONS, DIM + 1), np.float32))


def test_smoothing_is_the_mean_over_existing_neighbours() -> None:
    n = np.array([1.0, 4.0, 2.0, 8.0])
    np.testing.assert_allclose(smooth_novelty(n, 1), [2.5, 7 / 3, 14 / 3, 5.0])
    np.testing.assert_array_equal(smooth_novelty(n, 0), n)
    np.testing.assert_array_equal(smooth_novelty(n[:1], 1), n[:1])


def test_scores_are_the_smoothed_novelty(calibrated: SceneModel) -> None:
    query = footage(12, seed=6)
    n = calibrated.novelty(query)
    expected = calibrated.score_novelty(smooth_novelty(n, 1))
    np.testing.assert_allclose(calibrated.score(query), expected, rtol=1e-6)
    plain = SceneModel.from_bytes(
        calibrated.to_bytes(), calibrated.settings.model_copy(update={"smoothing_radius": 0})
    )
    np.testing.assert_allclose(plain.score(query), calibrated.score_novelty(n), rtol=1e-6)


@pytest.mark.parametrize("radius", [0, 1])
def test_live_smoothing_gives_offline_finals_and_causal_provisionals(radius: int) -> None:
    n = np.random.default_rng(7).random(9)
    smoother = NoveltySmoother(radius)
    provisional, finals = [], []
    for value in n:
        p, f = smoother.push(float(value))
        provisional.append(p)
        finals.append(f)
    offline = smooth_novelty(n, radius)
    if radius:
        assert finals[0] is None
        np.testing.assert_allclose(finals[1:], offline[:-1])
        # the newest snippet's provisional value is its offline one when it is the last
        np.testing.assert_allclose(provisional[-1], offline[-1])
        np.testing.assert_allclose(provisional, [n[0], *((n[1:] + n[:-1]) / 2)])
    else:
        assert finals == [None] * len(n)
        np.testing.assert_allclose(provisional, n)
    # no novelty ends the run: the snippet before gets a run's last value, and the next run starts afresh
    provisional_end, final_end = smoother.push(None)
    assert provisional_end is None
    assert final_end == (pytest.approx(offline[-1]) if radius else None)
    assert smoother.push(None) == (None, None)
    assert smoother.push(0.5) == (0.5, None)
    with pytest.raises(ValueError, match="radius"):
        NoveltySmoother(2)
