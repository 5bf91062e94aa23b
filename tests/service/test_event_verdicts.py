"""Events show operators' verdicts (`verdict`, `verdict_category`) in `GET /events` and `GET /events/{id}`, over
real HTTP against the real server; a new verdict replaces the old one, and a refused one changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.conftest import ServerProcess, upload_video

pytestmark = pytest.mark.integration


def _job_event(client, path: Path) -> dict:  # type: ignore[no-untyped-def]
    # The module's server has threshold 0: each analysed file yields exactly one (closed) event.
    job = upload_video(client, path)
    assert job.status_code == 200, job.text
    items = client.get("/events", params={"job": job.json()["id"]}).json()["items"]
    assert len(items) == 1
    return items[0]


def test_events_show_their_verdict(server: ServerProcess, footage: dict[str, Path]) -> None:
    with server.client() as client:
        judged = _job_event(client, footage["short"])
        other = _job_event(client, footage["short"])
        assert judged["verdict"] is None and judged["verdict_category"] is None
        category = client.get("/ready").json()["model"]["category_names"][0]

        given = client.post(
            f"/events/{judged['id']}/feedback", json={"verdict": "confirmed", "category": category}
        )
        assert given.status_code == 200, given.text
        one = client.get(f"/events/{judged['id']}").json()
        assert (one["verdict"], one["verdict_category"]) == ("confirmed", category)
        # The list carries each event's own verdict (one query for the page), none for the other event.
        listed = {e["id"]: e for e in client.get("/events", params={"source": "job"}).json()["items"]}
        assert (listed[judged["id"]]["verdict"], listed[judged["id"]]["verdict_category"]) == (
            "confirmed",
            category,
        )
        assert listed[other["id"]]["verdict"] is None and listed[other["id"]]["verdict_category"] is None

        # A new verdict replaces the old one, category included.
        assert (
            client.post(f"/events/{judged['id']}/feedback", json={"verdict": "false_alarm"}).status_code
            == 200
        )
        one = client.get(f"/events/{judged['id']}").json()
        assert (one["verdict"], one["verdict_category"]) == ("false_alarm", None)

        # Refused verdicts leave it as it was.
        bad = client.post(
            f"/events/{judged['id']}/feedback", json={"verdict": "confirmed", "category": "no such kind"}
        )
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_category"
        assert client.post(f"/events/{judged['id']}/feedback", json={"verdict": "maybe"}).status_code == 422
        one = client.get(f"/events/{judged['id']}").json()
        assert (one["verdict"], one["verdict_category"]) == ("false_alarm", None)
        assert client.get(f"/events/{other['id']}").json()["verdict"] is None
