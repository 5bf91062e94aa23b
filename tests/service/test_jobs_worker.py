"""The job worker on its own (no HTTP server): what a job that cannot run leaves behind."""

from __future__ import annotations

import time
from pathlib import Path

from service.jobs import PRIORITY_BACKGROUND, JobManager
from service.metrics import ServiceMetrics
from service.model_service import ModelService
from service.settings import ServiceSettings
from service.storage import Database, JobRecord, JobStore


def test_a_job_failed_because_the_model_did_not_load_leaves_no_upload_behind(tmp_path: Path) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    settings = ServiceSettings(data_dir=tmp_path / "data", model_checkpoint=bad, device="cpu")
    metrics = ServiceMetrics()
    model = ModelService(settings, metrics)
    model.start()
    store = JobStore(Database(tmp_path / "db.sqlite"))
    upload = tmp_path / "upload.mp4"
    upload.write_bytes(b"spooled video")
    store.create(
        JobRecord(
            id="j1",
            status="queued",
            created_at=time.time(),
            filename="v.mp4",
            size_bytes=13,
            upload_path=str(upload),
        )
    )
    jobs = JobManager(store, model, metrics)
    jobs.enqueue("j1", PRIORITY_BACKGROUND)
    jobs.start()
    try:
        deadline = time.monotonic() + 30
        while (job := store.get("j1")) is not None and not job.terminal and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        jobs.stop(timeout=5)
    assert job is not None and job.status == "failed" and job.error_code == "model_failed"
    assert not upload.exists()
