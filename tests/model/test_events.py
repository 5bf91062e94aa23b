import numpy as np
import pytest

from model.events import EventDetector, EventPolicy, detect_events

NAMES = ["Biking", "Vehicle"]


def timeline(scores):
    s = np.asarray(scores, dtype=float)
    starts = np.arange(len(s)) * 1.0
    return s, starts, starts + 1.0


def test_hysteresis_keeps_one_event_through_a_dip_between_thresholds() -> None:
    s, a, b = timeline([0.1, 0.8, 0.45, 0.9, 0.2, 0.1])
    cats = np.tile([0.2, 0.8], (len(s), 1))
    events = detect_events(s, a, b, cats, NAMES, EventPolicy(enter_threshold=0.5, exit_threshold=0.4))
    assert len(events) == 1
    e = events[0]
    assert (e.start_s, e.end_s, e.start_snippet, e.end_snippet) == (1.0, 4.0, 1, 4)
    assert e.peak_score == pytest.approx(0.9) and e.dominant_category == "Vehicle"
    assert e.categories["Vehicle"] == pytest.approx(0.8)


def test_without_hysteresis_the_dip_splits_the_event() -> None:
    s, a, b = timeline([0.1, 0.8, 0.45, 0.9, 0.2])
    events = detect_events(s, a, b, None, NAMES, EventPolicy(enter_threshold=0.5, exit_threshold=0.5))
    assert len(events) == 2 and events[0].dominant_category is None


def test_min_duration_cooldown_and_open_event_at_end() -> None:
    s, a, b = timeline([0.9, 0.1, 0.1, 0.9, 0.9, 0.1, 0.9, 0.9])
    short = detect_events(s, a, b, None, NAMES, EventPolicy(min_duration_s=1.5))
    assert [(e.start_s, e.end_s) for e in short] == [(3.0, 5.0), (6.0, 8.0)]
    cooled = detect_events(s, a, b, None, NAMES, EventPolicy(cooldown_s=2.5))
    # the second rise (t=3) starts inside the 2.5 s cooldown after t=1; t=4 is past it, t=6 is not
    assert [e.start_s for e in cooled] == [0.0, 4.0]


def test_min_gap_delays_closing() -> None:
    detector = EventDetector(EventPolicy(min_gap_s=2.0), NAMES)
    opened, closed = detector.update(0, 0.0, 1.0, 0.9, None)
    assert opened and closed is None
    assert detector.update(1, 1.0, 2.0, 0.1, None) == (False, None)
    _, closed = detector.update(2, 2.0, 3.0, 0.1, None)
    assert closed is not None and closed.end_s == 1.0 and not detector.active


def test_policy_rejects_exit_above_enter() -> None:
    with pytest.raises(ValueError):
        EventPolicy(enter_threshold=0.3, exit_threshold=0.6)


def test_event_categories_cover_only_the_event_not_the_gap_snippets_that_closed_it() -> None:
    # Two high "Biking" snippets, then three low "Vehicle" ones that only serve to close the event (min_gap_s).
    s, a, b = timeline([0.9, 0.9, 0.1, 0.1, 0.1])
    cats = np.array([[0.9, 0.1]] * 2 + [[0.0, 1.0]] * 3)
    policy = EventPolicy(enter_threshold=0.5, exit_threshold=0.4, min_gap_s=3.0)
    (e,) = detect_events(s, a, b, cats, NAMES, policy)
    assert (e.start_snippet, e.end_snippet) == (0, 2)
    assert e.dominant_category == "Biking"
    assert e.categories["Biking"] == pytest.approx(0.9)


def test_degraded_snippets_never_open_an_event_and_are_no_evidence_inside_one() -> None:
    s, a, b = timeline([0.9, 0.9, 0.1, 0.9, 0.95, 0.1, 0.1])
    degraded = np.array([True, True, False, False, True, True, False])
    policy = EventPolicy(enter_threshold=0.5, exit_threshold=0.4)
    events = detect_events(s, a, b, None, NAMES, policy, degraded)
    # Snippets 0-1 are high but broken: nothing opens. The event opened at 3 ignores the broken 4 (its 0.95 is no
    # peak) and the broken 5 (its 0.1 is no calm); the clean low snippet 6 closes it at its last good high one.
    assert [(e.start_snippet, e.end_snippet, e.peak_score) for e in events] == [(3, 4, 0.9)]
    assert detect_events(s, a, b, None, NAMES, policy, np.ones(7, bool)) == []


def test_an_event_carried_to_another_detector_closes_as_if_seen_whole() -> None:
    rng = np.random.default_rng(0)
    scores = [0.1, 0.8, 0.9, 0.6, 0.7, 0.95, 0.3, 0.2, 0.1]
    cats = rng.dirichlet([1.0, 1.0], size=len(scores))
    policy = EventPolicy(enter_threshold=0.5, exit_threshold=0.4, min_gap_s=1.0)
    whole = EventDetector(policy, NAMES)
    for i, s in enumerate(scores):
        _, closed = whole.update(i, float(i), i + 1.0, s, cats[i])
        if closed is not None:
            expected = closed
    # The first detector sees snippets 0-3 and, with a low tail, stops; the second's clock runs 100 s ahead.
    first = EventDetector(policy, NAMES)
    for i in range(4):
        first.update(i, float(i), i + 1.0, scores[i], cats[i])
    first.update(99, 3.5, 3.6, 0.3, cats[0])  # a low snippet after the last high one is not carried
    snapshot = first.snapshot()
    assert snapshot is not None and snapshot.count == 3 and snapshot.last_high_end_s == 4.0
    second = EventDetector(policy, NAMES)
    second.resume(snapshot, shift_s=100.0)
    with pytest.raises(ValueError):
        second.resume(snapshot)
    for i in range(4, len(scores)):
        _, closed = second.update(i, i + 100.0, i + 101.0, scores[i], cats[i])
        if closed is not None:
            carried = closed
    assert (carried.start_s, carried.end_s) == (expected.start_s + 100.0, expected.end_s + 100.0)
    assert carried.peak_score == expected.peak_score
    assert carried.mean_score == pytest.approx(expected.mean_score)
    assert carried.categories == pytest.approx(expected.categories)
    assert carried.dominant_category == expected.dominant_category
    assert EventDetector(policy, NAMES).snapshot() is None
