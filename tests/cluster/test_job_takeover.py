"""A file job outlives the API replica that runs it (marker `cluster`): the replica is SIGKILLed mid-analysis,
the other replica takes the job over once its lease expires, reads the upload from the shared store, finishes it,
and the result and its events are stored once. Its own stack (the module-scoped fixture), as the test kills a
replica."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.cluster.conftest import ClusterStack
from tests.reliability.conftest import wait_for
from tests.service.conftest import encode_looped_clip, upload_video, wait_final

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

LEASE_S = 4.0


@pytest.fixture(scope="module")
def replica_env() -> dict[str, str]:
    # A short lease, so the takeover comes seconds after the kill; every event kept (threshold 0), so the
    # test can count them.
    return {"REFINEVAD_JOB_LEASE_S": str(LEASE_S), "REFINEVAD_EVENT_THRESHOLD": "0"}


def _row(database_url: str, sql: str, *params: object) -> dict:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return row


def test_a_job_survives_the_death_of_the_replica_running_it(
    stack: ClusterStack, tmp_path: Path, report
) -> None:
    url = stack.database.url()
    a, _ = stack.replicas
    video = encode_looped_clip(tmp_path / "long.mp4", repeats=6)
    with a.client() as client:
        job_id = upload_video(client, video).json()["id"]

    def running() -> dict | None:
        job = _row(url, "SELECT status, progress, owner FROM jobs WHERE id = %s", job_id)
        return job if job["status"] == "running" and job["progress"] > 0 else None

    owner = wait_for(running, 180, "the job to run")["owner"]  # type: ignore[index]
    # The owner is `host:pid:suffix`: the replica to kill is the one whose process that is.
    victim = next(r for r in stack.replicas if r.proc is not None and r.proc.pid == int(owner.split(":")[1]))
    survivor = next(r for r in stack.replicas if r is not victim)
    victim.kill()
    killed_at = time.monotonic()

    with survivor.client() as client:
        final = wait_final(client, job_id, timeout=300)
        report("job_finished_after_the_kill_s", time.monotonic() - killed_at)
        assert final["status"] == "succeeded", final
        assert final["result"]["frames"] == 6 * 180
        assert final["attempts"] == 2 and "taken over" in final["note"] and owner in final["note"]
        # Stored once: one set of events, the survivor's; nothing of the upload left in the store.
        events = client.get("/events", params={"job": job_id, "limit": 1000}).json()
    row = _row(url, "SELECT owner, lease_expires_at FROM jobs WHERE id = %s", job_id)
    assert survivor.proc is not None and int(row["owner"].split(":")[1]) == survivor.proc.pid
    assert row["lease_expires_at"] is None
    stored = _row(
        url, "SELECT count(*) AS n FROM events WHERE source_kind = 'job' AND source_id = %s", job_id
    )
    assert stored["n"] == events["total"] == len(final["result"]["events"]) > 0
    assert _row(url, "SELECT count(*) AS n FROM job_uploads WHERE job_id = %s", job_id)["n"] == 0
    if victim is a:
        # The survivor never had the upload: it read it from the shared store, and removed its copy.
        assert "upload fetched from the shared store" in survivor.log_tail(200_000)
    # No spooled upload and no task copy is left (task copies live in uploads/tasks).
    assert [p for p in (survivor.data_dir / "uploads").rglob("*") if p.is_file()] == []
