"""bench.fusion_cv's rules and its choice of sources (the run itself is `python -m bench.fusion_cv`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.fusion_cv import RULES, fused, sources


def test_each_rule_fuses_as_named() -> None:
    head = np.array([0.9, 0.1, 0.6])
    scene = np.array([0.2, 0.7, 0.4])
    trusted = np.array([True, True, False])
    got = {rule: fused(rule, head, scene, trusted) for rule in RULES}
    np.testing.assert_allclose(got["head"], head)
    np.testing.assert_allclose(got["scene"], scene)
    np.testing.assert_allclose(got["max"], [0.9, 0.7, 0.6])
    np.testing.assert_allclose(got["mean"], [0.55, 0.4, 0.5])
    # Where the head does not know the view, the scene's score alone.
    np.testing.assert_allclose(got["gated-max"], [0.9, 0.7, 0.4])
    np.testing.assert_allclose(got["gated-mean"], [0.55, 0.4, 0.4])


def test_only_sources_with_enough_normal_clips_are_cameras(tmp_path: Path) -> None:
    rows = ["file,fight,source"]
    rows += [f"noFight/a{i}.mp4,0,A" for i in range(4)] + ["fight/a.mp4,1,A"]
    rows += [f"noFight/b{i}.mp4,0,B" for i in range(3)] + ["fight/b.mp4,1,B"]
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n")
    found = sources(tmp_path)
    assert list(found) == ["A"]
    assert [p.name for p in found["A"][0]] == ["a0.mp4", "a1.mp4", "a2.mp4", "a3.mp4"]
    assert [p.name for p in found["A"][1]] == ["a.mp4"]
