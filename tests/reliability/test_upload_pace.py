"""Upload pace under load, against the real service (`refinevad serve`): while analysis jobs keep both cores busy,
clients that drip a multipart body's part headers one byte a second are cut at the configured limit (408, or a
close), and the uploads sent beside them are received and analysed, nothing lost.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.reliability.conftest import server_pid, wait_for
from tests.service.conftest import ServerProcess, encode_looped_clip, upload_video, wait_final

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

GRACE_S = 4.0
ENV = {
    "REFINEVAD_SYNC_MAX_SECONDS": "10",
    "REFINEVAD_JOB_WORKERS": "2",
    # Some data every 3 s, 1 KiB/s on average once 4 s have passed, all of it within 20 s.
    "REFINEVAD_UPLOAD_IDLE_TIMEOUT_S": "3",
    "REFINEVAD_UPLOAD_MIN_RATE_KIB_S": "1",
    "REFINEVAD_UPLOAD_RATE_GRACE_S": str(GRACE_S),
    "REFINEVAD_UPLOAD_MAX_DURATION_S": "20",
}
# Cut at the grace period; the rest is slack for timers on a machine whose cores the jobs keep busy.
CUT_WITHIN_S = GRACE_S + 6.0
DRIP_PART = (
    b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="drip.mp4"\r\n'
    b"Content-Type: video/mp4\r\n\r\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # A loaded machine (the point of this module) can take a while to warm the model.
    proc = ServerProcess(tmp_path_factory.mktemp("upload-pace") / "data", env=ENV).start(timeout=180)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """72 s of real Ped2 footage: seconds of analysis on both cores, so the jobs outlast the drips."""
    return encode_looped_clip(tmp_path_factory.mktemp("pace-footage") / "long.mp4", repeats=4)


def drip_part_headers(server: ServerProcess, every_s: float, out: list[tuple[bytes, float]]) -> None:
    """A multipart upload whose part headers arrive one byte every `every_s` (30 s at most); appends what the
    server answered (b"" for a close without an answer) and the seconds from the first body byte."""
    head = (
        f"POST /analyze HTTP/1.1\r\nHost: t\r\nX-API-Key: {server.api_key}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 1000000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        started = time.monotonic()
        for byte in DRIP_PART * 4:
            if time.monotonic() - started > 30 or select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # answered and closed while we were sending
                break
            if select.select([sock], [], [], every_s)[0]:
                break
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except OSError:
            pass
        out.append((reply, time.monotonic() - started))


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, over all cores (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return (total - idle) / os.sysconf("SC_CLK_TCK"), total / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_part_header_drips_are_cut_while_jobs_keep_the_cores_busy(
    server: ServerProcess, long_video: Path, footage: dict[str, Path], report
) -> None:
    with server.client(timeout=120) as client:
        jobs = []
        for _ in range(2):  # one per job worker
            reply = upload_video(client, long_video, background=True)
            assert reply.status_code == 202, reply.text
            jobs.append(reply.json()["id"])
        wait_for(
            lambda: sum(client.get(f"/jobs/{j}").json()["status"] == "running" for j in jobs) == 2,
            30,
            "both job workers running",
        )
        pid = server_pid(server)
        cpu_before, wall_before, machine_before = cpu_seconds(pid), time.monotonic(), machine_busy()

        drips: list[tuple[bytes, float]] = []
        threads = [threading.Thread(target=drip_part_headers, args=(server, 1.0, drips)) for _ in range(3)]
        for thread in threads:
            thread.start()
        # Uploads sent beside the drips, while the jobs run: one answered with its result, one queued.
        with ThreadPoolExecutor(2) as pool:
            beside = [
                pool.submit(upload_video, client, footage["short"]),
                pool.submit(upload_video, client, footage["clip"], background=True),
            ]
            for thread in threads:
                thread.join(40)
            cores_busy = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before)
            machine_after = machine_busy()
            machine_share = (machine_after[0] - machine_before[0]) / (machine_after[1] - machine_before[1])
            running = [j for j in jobs if client.get(f"/jobs/{j}").json()["status"] == "running"]
            answered = [future.result(timeout=180) for future in beside]
        report("server_cores_busy_during_drips", cores_busy)
        report("machine_cpu_busy_share_during_drips", machine_share)
        report("part_header_drip_cut_after_s", max(seconds for _, seconds in drips))

        assert len(drips) == 3
        for reply, seconds in drips:
            assert reply == b"" or (reply.startswith(b"HTTP/1.1 408") and b"upload_too_slow" in reply), reply[
                :300
            ]
            assert GRACE_S - 0.1 <= seconds < CUT_WITHIN_S, seconds
        assert running, "the jobs were over before the drips were cut: no load measured"

        assert answered[0].status_code == 200, answered[0].text
        assert answered[0].json()["status"] == "succeeded"
        assert answered[1].status_code == 202, answered[1].text
        for job_id in [*jobs, answered[1].json()["id"]]:
            assert wait_final(client, job_id, timeout=180)["status"] == "succeeded"
    # Nothing of the drips is left in the spool, and the jobs removed their uploads.
    assert list((server.data_dir / "uploads").iterdir()) == []
