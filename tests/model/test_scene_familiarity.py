"""Scene familiarity (model/scene_familiarity.py): the leave-one-clip-out fit, the check, batched windows, and the
shipped models' calibrations on real footage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint
from model.inference import DEFAULT_CHECKPOINT, SHIPPED_CHECKPOINTS, AnalysisEngine, EngineConfig
from model.scene_familiarity import (
    METADATA_KEY,
    SceneCalibration,
    SceneFamiliarity,
    fit_scene_familiarity,
)
from tests.shared_data import FIELD_ROOT, PED2_ROOT

D = 8


def _clips(rng: np.random.Generator, n: int = 5, scale: float = 1.0) -> dict[str, np.ndarray]:
    center = np.linspace(-2, 2, D)
    return {f"c{i}": (center + scale * rng.normal(size=(6 + i, D))).astype(np.float32) for i in range(n)}


def test_fit_is_leave_one_clip_out_with_the_margin() -> None:
    clips = _clips(np.random.default_rng(0))
    clips["c0"][:, 3] = 5.0  # a channel that never varies in one clip
    calibration = fit_scene_familiarity(list(clips), clips.__getitem__, margin=4.0)
    for name, x in clips.items():
        others = np.concatenate([v for k, v in clips.items() if k != name]).astype(np.float64)
        mean, std = others.mean(0), others.std(0, ddof=1)
        d = np.sort((((x - mean) / std) ** 2).mean(1))
        assert calibration.training_clip_distances[name] == pytest.approx(d[(len(d) - 1) // 2], rel=1e-9)
    assert calibration.threshold == pytest.approx(4.0 * max(calibration.training_clip_distances.values()))
    everything = np.concatenate(list(clips.values())).astype(np.float64)
    np.testing.assert_allclose(calibration.mean, everything.mean(0), rtol=1e-9)
    np.testing.assert_allclose(calibration.std, everything.std(0, ddof=1), rtol=1e-9)


def test_a_channel_that_never_varies_divides_by_one() -> None:
    rng = np.random.default_rng(1)
    clips = _clips(rng)
    for x in clips.values():
        x[:, 0] = 3.0
    calibration = fit_scene_familiarity(list(clips), clips.__getitem__)
    assert calibration.std[0] == 1.0
    check, _ = SceneFamiliarity(calibration).check_video(torch.from_numpy(clips["c1"]))
    assert np.isfinite(check.distance)


@pytest.mark.parametrize(
    ("clips", "message"),
    [
        ({"a": np.zeros((3, D))}, "at least 2 training clips"),
        ({"a": np.zeros((3, D)), "b": np.zeros((0, D))}, "no snippets"),
        ({"a": np.zeros((3, D)), "b": np.zeros((3, D + 1))}, "different feature dims"),
        ({"a": np.zeros((1, D)), "b": np.ones((1, D))}, "fewer than 2 training snippets"),
    ],
)
def test_fit_refuses_what_it_cannot_measure(clips: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_scene_familiarity(list(clips), clips.__getitem__)


def test_new_footage_of_the_same_scene_is_familiar_and_another_scene_is_not() -> None:
    rng = np.random.default_rng(2)
    clips = _clips(rng)
    scene = SceneFamiliarity(fit_scene_familiarity(list(clips), clips.__getitem__))
    same = next(iter(_clips(np.random.default_rng(3), n=1).values()))
    other = same * 3.0 + 10.0
    assert scene.check_video(torch.from_numpy(same))[0].familiar
    verdict, per_snippet = scene.check_video(torch.from_numpy(other))
    assert not verdict.familiar and verdict.distance > scene.threshold
    assert verdict.snippets == len(other) and verdict.threshold == scene.threshold
    assert verdict.unfamiliar_snippets == len(other) and not per_snippet.any()
    # An unusual stretch shorter than half the window leaves the median, and the verdicts, alone.
    mixed = same.copy()
    mixed[-(len(mixed) // 2 - 1) :] = other[-(len(mixed) // 2 - 1) :]
    summary, per_snippet = scene.check_video(torch.from_numpy(mixed))
    assert summary.familiar and per_snippet.all() and summary.unfamiliar_snippets == 0


def test_batched_windows_match_one_check_each() -> None:
    rng = np.random.default_rng(4)
    clips = _clips(rng)
    scene = SceneFamiliarity(fit_scene_familiarity(list(clips), clips.__getitem__))
    windows = (
        torch.from_numpy(rng.normal(size=(3, 4, D)).astype(np.float32))
        * torch.tensor([1.0, 5.0, 50.0])[:, None, None]
    )
    batched = scene.distances(windows)
    assert batched.shape == (3,)
    for window, distance in zip(windows, batched, strict=True):
        assert scene.check_video(window)[0].distance == pytest.approx(float(distance))
    with pytest.raises(ValueError, match=r"expected \[T>0, 8\]"):
        scene.check_video(torch.zeros(0, D))
    with pytest.raises(ValueError, match=r"expected \[T>0, 8\]"):
        scene.check_video(torch.zeros(2, D + 1))


def test_each_snippet_is_judged_over_its_trailing_window_as_live_would() -> None:
    clips = _clips(np.random.default_rng(6))
    calibration = fit_scene_familiarity(list(clips), clips.__getitem__, window=4)
    scene = SceneFamiliarity(calibration)
    same = next(iter(_clips(np.random.default_rng(7), n=1).values()))
    # A camera turned to another view after 6 snippets: unfamiliar once the new view fills more than half the
    # window (the lower median of an even window is the familiar half's).
    video = np.concatenate([same[:6], same[:6] * 3.0 + 10.0])
    summary, familiar = scene.check_video(torch.from_numpy(video))
    assert familiar.tolist() == [True] * 8 + [False] * 4
    assert summary.unfamiliar_snippets == 4
    # Live computes the same verdict from the window that ends at each snippet.
    for t in range(len(video)):
        window = torch.from_numpy(video[: t + 1])[None]
        assert bool(scene.distances(window)[0] <= scene.threshold) == familiar[t]
        # The previous snippet's verdict, from the same window's snippet distances (the scheduler's final message).
        if t:
            d = scene.snippet_distances(window)
            assert bool(scene.median_at(d, before_last=1)[0] <= scene.threshold) == familiar[t - 1]
    # The fit reads full windows only (or whole clips shorter than the window).
    assert calibration.window == 4


def test_calibration_round_trips_through_checkpoint_metadata() -> None:
    clips = _clips(np.random.default_rng(5))
    calibration = fit_scene_familiarity(list(clips), clips.__getitem__)
    metadata = {METADATA_KEY: calibration.model_dump(mode="json")}
    scene = SceneFamiliarity.from_metadata(metadata)
    assert scene is not None and scene.calibration == calibration
    assert SceneFamiliarity.from_metadata({}) is None


@pytest.mark.parametrize("name", ["default", "ped2_motion"])
def test_the_shipped_models_are_calibrated_on_their_training_clips(name: str) -> None:
    path = DEFAULT_CHECKPOINT if name == "default" else SHIPPED_CHECKPOINTS[name]
    loaded = load_checkpoint(path)
    calibration = SceneCalibration.model_validate(loaded.metadata[METADATA_KEY])
    assert len(calibration.mean) == loaded.config.feature_dim
    # The 18 clips of the weak training split, each measured against the other 17.
    assert len(calibration.training_clip_distances) == 18
    assert calibration.threshold == pytest.approx(10 * max(calibration.training_clip_distances.values()))


@pytest.fixture(scope="module")
def default_engine() -> AnalysisEngine:
    return AnalysisEngine.from_config(EngineConfig(device="cpu"))


@pytest.mark.integration
@pytest.mark.skipif(not PED2_ROOT.is_dir(), reason="UCSD Ped2 is not beside the checkout")
def test_ped2_test_footage_is_familiar_and_keeps_its_events(default_engine: AnalysisEngine) -> None:
    from model.data.ped2 import Ped2Dataset

    dataset = Ped2Dataset(PED2_ROOT)
    for clip in ("training_13", "testing_02"):  # a normal and an anomalous clip of the test split
        result = default_engine.analyze(dataset.path(clip))
        assert result.scene is not None and result.scene.familiar, clip
        assert result.scene_warning is None
    assert result.events, "the cyclist of testing_02 raises an event"
    assert default_engine.identity.scene_threshold == result.scene.threshold


@pytest.mark.integration
@pytest.mark.skipif(not FIELD_ROOT.is_dir(), reason="the field clips are not beside the checkout")
@pytest.mark.parametrize("mode", ["withhold_events", "report", "off"])
def test_another_cameras_footage_is_flagged_and_raises_no_events(mode: str) -> None:
    engine = AnalysisEngine.from_config(EngineConfig(device="cpu", scene_check=mode))
    result = engine.analyze(FIELD_ROOT / "phone_vfr.mp4")  # a phone's test pattern: nothing like Ped2
    # The head lights up on it either way; only the check knows these scores are no evidence.
    assert max(s.score for s in result.snippets) > engine.config.events.enter_threshold
    if mode == "off":
        assert result.scene is None and result.scene_warning is None and result.events
        assert engine.identity.scene_threshold is None
        return
    assert result.scene is not None and not result.scene.familiar
    assert result.scene.distance > 100 * result.scene.threshold
    assert "UNFAMILIAR SCENE" in (result.scene_warning or "")
    if mode == "withhold_events":
        assert result.events == [] and "events withheld" in (result.scene_warning or "")
    else:
        assert result.events and "withheld" not in (result.scene_warning or "")
