"""Soak run: the real service under stream add/remove churn, WebSocket client churn and a camera that drops, for
N minutes, with its resident memory, open file descriptors and threads sampled from /proc all along.

Run from the repository root (the RTSP camera needs the GStreamer RTSP server packages; without them the run uses
file replay and the hostile peers only)::

    .venv/bin/python -m bench.soak --minutes 10 --out soak.json

Passes (exit 0) when, after the churn stops and the streams are gone, descriptors and threads are back where they
were after the warm-up, and resident memory grew by less than `--max-rss-slope` MB per minute over the second half
of the run (a least-squares fit, so allocator noise does not count as a trend). The samples and the verdict are
printed and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

log = logging.getLogger("bench.soak")


class ClientChurn:
    """WebSocket clients on one stream that read everything and reconnect every `reconnect_s`."""

    def __init__(self, url: str, headers: dict[str, str], clients: int, reconnect_s: float) -> None:
        self.url, self.headers, self.reconnect_s = url, headers, reconnect_s
        self.messages = 0
        self.connections = 0
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        from websockets.sync.client import connect

        while not self._stop.is_set():
            try:
                with connect(self.url, additional_headers=self.headers, open_timeout=10) as ws:
                    self.connections += 1
                    until = time.monotonic() + self.reconnect_s
                    while time.monotonic() < until and not self._stop.is_set():
                        try:
                            ws.recv(timeout=1.0)
                            self.messages += 1
                        except TimeoutError:
                            continue
            except Exception:
                self.errors += 1
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


def settle_process(pid: int, limit_s: float = 15.0) -> dict:
    """/proc figures of `pid` once its threads and descriptors stopped changing (or after `limit_s`)."""
    from tests.reliability.conftest import proc_stats

    deadline = time.monotonic() + limit_s
    last = proc_stats(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = proc_stats(pid)
        if (now.threads, now.fds) == (last.threads, last.fds):
            return now.__dict__
        last = now
    return last.__dict__


def rss_slope_mb_per_min(samples: list[dict]) -> float:
    half = samples[len(samples) // 2 :]
    if len(half) < 3:
        return 0.0
    t = np.array([s["t_s"] for s in half]) / 60.0
    rss = np.array([s["rss_mb"] for s in half])
    return float(np.polyfit(t, rss, 1)[0])


def soak(minutes: float, clients: int, sample_s: float, camera_drop_s: float) -> dict:
    from tests.footage import PED2_ROOT
    from tests.reliability.conftest import LIVE_ENV, HostilePeer, proc_stats
    from tests.rtsp_server import RtspServerProcess, gstreamer_available
    from tests.service.conftest import ServerProcess

    clip = str(PED2_ROOT / "testing" / "frames" / "01")
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", env=LIVE_ENV).start()
        silent, garbage = HostilePeer("silent"), HostilePeer("garbage")
        camera = RtspServerProcess().start() if gstreamer_available() else None
        pid = server.proc.pid  # type: ignore[union-attr]
        samples: list[dict] = []
        try:
            with server.client() as client:
                steady = client.post("/streams", json={"url": clip, "name": "steady", "loop": True}).json()[
                    "id"
                ]
                sources = [clip, f"rtsp://127.0.0.1:{silent.port}/cam", f"http://127.0.0.1:{garbage.port}/v"]
                if camera is not None:
                    sources.append(camera.url)
                    client.post("/streams", json={"url": camera.url, "name": "dropping camera"})
                ws_url = f"{server.url.replace('http://', 'ws://')}/streams/{steady}/live"
                churners = ClientChurn(ws_url, server.headers, clients, reconnect_s=20.0)

                def settle() -> dict:
                    return settle_process(pid)

                # Warm-up: one minute's worth of churn at most, then the reference point.
                warm_until = time.monotonic() + min(60.0, minutes * 60 / 5)
                while time.monotonic() < warm_until:
                    ids = [
                        client.post("/streams", json={"url": u, "name": "warm"}).json()["id"] for u in sources
                    ]
                    time.sleep(0.5)
                    for sid in ids:
                        client.delete(f"/streams/{sid}")
                churners.stop()
                reference = settle()
                churners = ClientChurn(ws_url, server.headers, clients, reconnect_s=20.0)
                log.info("reference after warm-up: %s", reference)

                started = time.monotonic()
                end = started + minutes * 60
                next_sample = started
                next_drop = started + camera_drop_s
                rounds = 0
                while time.monotonic() < end:
                    ids = [
                        client.post("/streams", json={"url": u, "name": "churn"}).json()["id"]
                        for u in sources
                    ]
                    time.sleep(0.5)
                    for sid in ids:
                        client.delete(f"/streams/{sid}")
                    rounds += 1
                    now = time.monotonic()
                    if camera is not None and now >= next_drop:
                        camera.kill()
                        time.sleep(2.0)
                        camera.start()
                        next_drop = now + camera_drop_s
                    if now >= next_sample:
                        stats = proc_stats(pid)
                        samples.append({"t_s": round(now - started, 1), **stats.__dict__, "rounds": rounds})
                        log.info("t=%5.0fs %s, %d churn rounds", now - started, stats, rounds)
                        next_sample = now + sample_s
                churners.stop()
                steady_view = client.get(f"/streams/{steady}").json()
                for view in client.get("/streams").json()["items"]:
                    client.delete(f"/streams/{view['id']}")
                final = settle()
        finally:
            if camera is not None:
                camera.kill()
            silent.close()
            garbage.close()
            server.stop()
    slope = rss_slope_mb_per_min(samples)
    return {
        "minutes": minutes,
        "clients": clients,
        "churn_rounds": rounds,
        "streams_added_and_removed": rounds * len(sources),
        "websocket_connections": churners.connections,
        "websocket_messages": churners.messages,
        "steady_stream": {
            k: steady_view[k] for k in ("state", "snippets_processed", "dropped_frames", "reconnects")
        },
        "reference": reference,
        "final": final,
        "rss_slope_mb_per_min": round(slope, 3),
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=10, help="WebSocket clients on the steady stream")
    parser.add_argument("--sample-s", type=float, default=15.0, help="seconds between /proc samples")
    parser.add_argument("--camera-drop-s", type=float, default=60.0, help="seconds between camera kills")
    parser.add_argument("--max-rss-slope", type=float, default=2.0, help="MB per minute allowed")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = soak(args.minutes, args.clients, args.sample_s, args.camera_drop_s)
    ref, fin = result["reference"], result["final"]
    verdict = {
        "fds_flat": fin["fds"] <= ref["fds"] + 2,
        "threads_flat": fin["threads"] <= ref["threads"],
        "rss_flat": result["rss_slope_mb_per_min"] < args.max_rss_slope,
        "steady_stream_live": result["steady_stream"]["state"] == "live",
    }
    result["verdict"] = verdict
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    return 0 if all(verdict.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
