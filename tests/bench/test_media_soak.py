"""A short event-media soak against the real service (the long one is `python -m bench.media_soak`): streams that
each raise an event churn for 30 s under a 0.6 MB media budget; the media directory stays within it, retention
expires old media while the newest events keep theirs, and memory, descriptors and threads come back."""

from __future__ import annotations

import pytest

from bench.media_soak import media_soak, verdict
from tests.shared_data import PED2_ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not PED2_ROOT.is_dir(), reason="needs the shared Ped2 frames"),
]


def test_short_media_soak_keeps_media_and_memory_bounded() -> None:
    result = media_soak(minutes=0.5, streams=3, hold_s=5.0, budget_mb=0.6, sample_s=3.0)
    checks = verdict(result, slack_mb=0.5, max_rss_slope=2.0, max_rss_growth=40.0)
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(f"\nmedia soak: {summary}")
    assert result["events"] >= 20  # every churned stream raised an event
    assert all(checks.values()), (checks, summary)
