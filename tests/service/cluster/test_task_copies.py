"""A cluster job's Ray task keeps its copy of the upload in the node's data directory, and a service start on
the node removes the copies that tasks killed with their processes left behind (the job's row says whether the
task can still be running)."""

from __future__ import annotations

import time
from pathlib import Path

from service.cluster.runtime import remove_orphaned_task_copies, task_copies_dir
from service.settings import ServiceSettings
from service.storage import Database, JobRecord, JobStore


def test_copies_of_finished_and_unknown_jobs_are_removed_and_running_ones_kept(tmp_path: Path) -> None:
    settings = ServiceSettings(data_dir=tmp_path / "data")
    assert task_copies_dir(settings).is_relative_to(settings.data_dir)
    db = Database(tmp_path / "jobs.sqlite3")
    try:
        jobs = JobStore(db)
        for job_id, status in (("a" * 32, "running"), ("b" * 32, "succeeded"), ("c" * 32, "queued")):
            jobs.create(
                JobRecord(id=job_id, status=status, created_at=time.time(), filename="v.mp4", size_bytes=10)
            )
        folder = task_copies_dir(settings)
        folder.mkdir(parents=True)
        names = [f"{'a' * 32}-x1.upload", f"{'b' * 32}-x2.upload", f"{'c' * 32}-x3.mp4", f"{'d' * 32}-x4.mp4"]
        for name in names:
            (folder / name).write_bytes(b"video")
        assert remove_orphaned_task_copies(settings, jobs) == 2
        assert sorted(p.name for p in folder.iterdir()) == [names[0], names[2]]
        # Nothing to do, and no folder at all, are both fine.
        assert remove_orphaned_task_copies(settings, jobs) == 0
        assert remove_orphaned_task_copies(ServiceSettings(data_dir=tmp_path / "other"), jobs) == 0
    finally:
        db.close()
