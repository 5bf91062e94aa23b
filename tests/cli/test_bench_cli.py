"""`refinevad bench --size`: preset overrides are parsed as JSON, validated, and refused clearly when wrong."""

from __future__ import annotations

import pytest

from bench.suite import Sizes
from cli.bench import _sized


def test_size_overrides_take_json_values_and_keep_the_rest_of_the_preset() -> None:
    sized = _sized(
        Sizes.full(), ["live_budget_s=60", 'clip_archs=["ViT-B-16"]', "clip_pipeline_arch=ViT-B-32"]
    )
    assert sized.live_budget_s == 60.0
    assert sized.clip_archs == ["ViT-B-16"]
    assert sized.clip_pipeline_arch == "ViT-B-32"  # not JSON: taken as text
    assert sized.scaling_rounds == Sizes.full().scaling_rounds


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("live_budget", "expected FIELD=VALUE"),
        ("no_such_field=1", "expected FIELD=VALUE"),
        ("e2e_rounds=[1]", "--size"),
    ],
)
def test_bad_size_overrides_are_refused_with_a_clear_message(override: str, message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        _sized(Sizes.full(), [override])
