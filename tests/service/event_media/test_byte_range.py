"""The `Range` header as the cluster's clip endpoint reads it (clips stored in the database): one range served,
anything else the whole clip, a start past the end 416."""

from __future__ import annotations

import pytest

from service.api.event_media import byte_range
from service.errors import ApiError


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=100-199", (100, 200)),
        ("bytes=100-", (100, 1000)),
        ("bytes=-10", (990, 1000)),
        ("bytes=-5000", (0, 1000)),
        ("bytes=900-5000", (900, 1000)),
        ("bytes= 0 - 0", (0, 1)),
        ("bytes=0-10,20-30", None),  # several ranges: the whole clip (allowed by RFC 9110)
        ("items=0-10", None),
        ("bytes=-", None),
        ("bytes=20-10", None),
    ],
)
def test_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 1000) == expected


def test_a_range_past_the_end_is_not_satisfiable() -> None:
    for header in ("bytes=1000-", "bytes=5000-6000", "bytes=-0"):
        with pytest.raises(ApiError) as raised:
            byte_range(header, 1000)
        assert raised.value.status_code == 416 and raised.value.headers == {"Content-Range": "bytes */1000"}
