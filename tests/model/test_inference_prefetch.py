"""The engine's encode loop: decoding on a prefetch thread gives the same features, stops cleanly, and keeps
decoded batches small for large frames."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from model.inference import MAX_BATCH_BYTES, AnalysisCancelled, AnalysisEngine, EngineConfig, _Prefetch
from model.video.snippets import iter_snippet_batches
from model.video.source import open_source
from tests.footage import encode_ped2_clip


@pytest.fixture(scope="module")
def engine() -> AnalysisEngine:
    return AnalysisEngine.from_config(EngineConfig(device="cpu"))


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "decode-prefetch"]


def test_features_equal_a_plain_decode_loop(tmp_path, engine: AnalysisEngine) -> None:
    video = encode_ped2_clip(tmp_path / "clip.mp4", max_frames=100)
    features, starts, ends, *_, frames, _, timings, regions = engine.encode(video)
    with open_source(video) as source:
        batches = list(iter_snippet_batches(source, engine.spec, 8))
    expected = torch.cat([engine.backbone.encode_snippets(b.frames) for b in batches])
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
    assert frames == 100 and ends[-1] == 100 and list(starts[:2]) == [0, 16]
    assert set(timings) == {"decode_s", "backbone_s"}
    assert regions is None  # region descriptors only when a scene model asks for them
    assert not _prefetch_threads()


def test_region_descriptors_made_beside_the_backbone_equal_a_plain_describe(tmp_path, engine) -> None:
    video = encode_ped2_clip(tmp_path / "clip.mp4", max_frames=100)
    encoded = engine.encode(video, describe_scene=True)
    with open_source(video) as source:
        batches = list(iter_snippet_batches(source, engine.spec, 8))
    expected = np.concatenate([engine.scene_descriptor.describe(b.frames) for b in batches])
    assert encoded.regions is not None and encoded.regions.shape == expected.shape
    # OpenCV's flow may differ in the last bit between calls (model.scene.descriptor).
    np.testing.assert_allclose(encoded.regions, expected, rtol=1e-4, atol=1e-5)
    assert "scene_s" in encoded.timings
    # A describe that fails raises from its future, so from encode as before.
    with pytest.raises(ValueError, match="uint8"):
        engine.describe_regions_async(np.zeros((1, 2, 8, 8, 3), np.float32)).result()


def test_cancel_and_errors_stop_the_decode_thread(tmp_path, engine: AnalysisEngine) -> None:
    video = encode_ped2_clip(tmp_path / "clip.mp4", max_frames=160)
    calls = []

    def stop_after_first() -> bool:
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(AnalysisCancelled):
        engine.encode(video, should_stop=stop_after_first)
    assert not _prefetch_threads()

    def failing():
        yield from range(2)
        raise RuntimeError("decoder broke")

    prefetch = _Prefetch(failing(), depth=1)
    assert [prefetch.next(), prefetch.next()] == [0, 1]
    with pytest.raises(RuntimeError, match="decoder broke"):
        prefetch.next()
    prefetch.close()
    assert not _prefetch_threads()


def test_close_while_the_producer_waits_on_a_full_queue() -> None:
    prefetch = _Prefetch(iter(range(1000)), depth=2)
    assert prefetch.next() == 0
    prefetch.close()
    assert not _prefetch_threads()
    ended = _Prefetch(iter(range(2)), depth=2)
    assert [ended.next(), ended.next(), ended.next(), ended.next()] == [0, 1, None, None]
    ended.close()


def test_large_frames_decode_fewer_snippets_per_batch(engine: AnalysisEngine) -> None:
    assert engine._snippets_per_batch(360, 240) == engine.config.snippets_per_batch
    # 640x480: 14.7 MB per 16-frame snippet, 4 fit in the budget; 720p and 1080p: one snippet per batch.
    assert engine._snippets_per_batch(640, 480) == MAX_BATCH_BYTES // (16 * 640 * 480 * 3) == 4
    assert engine._snippets_per_batch(1280, 720) == 1
    assert engine._snippets_per_batch(1920, 1080) == 1
