"""Offline, the head's scores count where the familiarity check could judge the view (AnalysisEngine.head_trusted)."""

from types import SimpleNamespace

import numpy as np

from model.inference import AnalysisEngine, EngineConfig


def _trusted(familiar: list[bool], minimum: int) -> list[bool]:
    engine = SimpleNamespace(config=EngineConfig(scene_check_min_snippets=minimum))
    return AnalysisEngine.head_trusted(engine, np.array(familiar)).tolist()  # type: ignore[arg-type]


def test_first_snippets_take_the_verdict_of_the_first_full_window() -> None:
    # The window at snippet 2 (the first with 3 snippets) is unfamiliar: the snippets before it are not trusted
    # even though their own 1- and 2-snippet windows looked familiar (the leak of an event in the first 3.2 s).
    assert _trusted([True, True, False, True, True], 3) == [False, False, False, True, True]
    assert _trusted([False, False, True, True], 3) == [True, True, True, True]


def test_a_short_video_is_judged_over_all_its_snippets() -> None:
    assert _trusted([True, False], 8) == [False, False]
    assert _trusted([False, True], 8) == [True, True]
    assert _trusted([True], 8) == [True]
    assert _trusted([], 8) == []
