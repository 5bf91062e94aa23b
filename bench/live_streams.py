"""Live streams: capture-to-message latency, concurrent real-time streams sustained, and the offline-vs-live AUC gap.

Run from the repository root (needs the GStreamer RTSP server packages for the first two parts)::

    .venv/bin/python -m bench.live_streams                 # all three parts, a few minutes on a 2-core CPU
    .venv/bin/python -m bench.live_streams --parts auc     # only the AUC gap (in-process, ~1 minute)

- capacity + latency: `refinevad serve` in a subprocess with the default (motion) backbone, and a real GStreamer
  RTSP server serving Ped2 test clip 01 at 10 fps. Streams (each its own RTSP connection) are added in steps; at
  each step, after a warm-up, a window of `--measure-s` seconds is observed. A step is sustained when no frame was
  dropped for lag and every stream received >= 9.5 fps. Latency is measured at the client: the wall clock when a
  WebSocket message arrives minus the stream's capture time of the snippet's last frame (`captured_at`), for the
  provisional messages of one stream (p50/p95). A final score comes one snippet (1.6 s) after its provisional.
- auc: every Ped2 test clip scored whole (`AnalysisEngine.analyze`) and through the live window (features appended
  one snippet at a time to a W-snippet device window, final score = the head on the window that ends one snippet
  later, the last snippet provisional), frame-level AUC over all test frames (sklearn roc_auc_score).
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

log = logging.getLogger("bench.live_streams")
PED2 = Path("/work/shared/data/ped2")


def live_window_scores(engine, features, window: int) -> np.ndarray:
    """Final live scores of one video's snippet features [T, D], exactly as the scheduler computes them."""
    import torch

    from service.live.window import FeatureWindows

    windows = FeatureWindows(window, features.shape[1], features.device, capacity=1)
    slot = np.array([windows.acquire()])
    t_total = features.shape[0]
    final = np.empty(t_total)
    with torch.inference_mode():
        for t in range(t_total):
            n = int(windows.append(slot, features[t : t + 1])[0])
            scores = engine.head(windows.gather(slot, n)).scores[0].float().cpu().numpy()
            if n >= 2:
                final[t - 1] = scores[-2]
            final[t] = scores[-1]  # provisional until the next snippet arrives
    return final


def bench_auc(window: int, checkpoint: Path | None) -> dict:
    from sklearn.metrics import roc_auc_score

    from model.inference import AnalysisEngine, EngineConfig

    engine = AnalysisEngine.from_config(EngineConfig(device="cpu", checkpoint=checkpoint))
    labels = json.loads((PED2 / "test_frame_labels.json").read_text())["frames"]
    f = engine.spec.frames_per_snippet
    offline_all, live_all, truth = [], [], []
    for clip, frame_labels in sorted(labels.items()):
        folder = PED2 / "testing" / "frames" / clip
        result = engine.analyze(folder)
        offline = np.array([s.score for s in result.snippets])
        features = engine.encode(folder)[0]
        live = live_window_scores(engine, features, window)
        n = len(frame_labels)
        offline_all.append(np.repeat(offline, f)[:n])
        live_all.append(np.repeat(live, f)[:n])
        truth.append(np.asarray(frame_labels))
    y = np.concatenate(truth)
    off, liv = np.concatenate(offline_all), np.concatenate(live_all)
    auc_off, auc_live = float(roc_auc_score(y, off)), float(roc_auc_score(y, liv))
    return {
        "clips": len(labels),
        "frames": len(y),
        "trained_model": engine.identity.trained,
        "window": window,
        "auc_offline": round(auc_off, 4),
        "auc_live": round(auc_live, 4),
        "auc_gap": round(auc_live - auc_off, 4),
        "mean_abs_score_diff": round(float(np.abs(off - liv).mean()), 4),
    }


def _latency_listener(ws_url: str, stop: threading.Event, out: list[float]) -> None:
    from websockets.sync.client import connect

    with connect(ws_url, open_timeout=10) as ws:
        while not stop.is_set():
            try:
                message = json.loads(ws.recv(timeout=1.0))
            except TimeoutError:
                continue
            if message.get("type") == "snippet" and message["status"] == "provisional":
                out.append(time.time() - message["captured_at"])


def bench_capacity(steps: list[int], warmup_s: float, measure_s: float) -> dict:
    from tests.rtsp_server import RtspServerProcess
    from tests.service.live.service_process import API_KEY, ServiceProcess

    results = []
    latency_at_one: dict | None = None
    with tempfile.TemporaryDirectory() as tmp, RtspServerProcess() as camera:
        service = ServiceProcess(Path(tmp) / "data", Path(tmp) / "service.log").start()
        try:
            with service.client() as client:
                ids: list[str] = []
                for target in steps:
                    while len(ids) < target:
                        body = {"url": camera.url, "name": f"cam {len(ids)}"}
                        ids.append(client.post("/streams", json=body).json()["id"])
                    time.sleep(warmup_s)
                    stop, latencies = threading.Event(), []
                    listener = threading.Thread(
                        target=_latency_listener,
                        args=(f"{service.ws_base}/streams/{ids[0]}/live?api_key={API_KEY}", stop, latencies),
                    )
                    listener.start()
                    before = {v["id"]: v for v in client.get("/streams").json()["items"]}
                    time.sleep(measure_s)
                    after = {v["id"]: v for v in client.get("/streams").json()["items"]}
                    stop.set()
                    listener.join()
                    dropped = sum(after[i]["dropped_frames"] - before[i]["dropped_frames"] for i in ids)
                    fps_in = [(after[i]["frames_in"] - before[i]["frames_in"]) / measure_s for i in ids]
                    processed = [
                        (after[i]["snippets_processed"] - before[i]["snippets_processed"]) * 16 / measure_s
                        for i in ids
                    ]
                    step = {
                        "streams": target,
                        "dropped_frames": dropped,
                        "min_fps_in": round(min(fps_in), 2),
                        "min_fps_processed": round(min(processed), 2),
                        "latency_p50_s": round(float(np.percentile(latencies, 50)), 3) if latencies else None,
                        "latency_p95_s": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
                        "sustained": dropped == 0 and min(fps_in) >= 9.5,
                    }
                    log.info("step %s", step)
                    results.append(step)
                    if target == steps[0]:
                        latency_at_one = step
                    if not step["sustained"]:
                        break
        finally:
            service.stop()
    sustained = [s["streams"] for s in results if s["sustained"]]
    return {
        "steps": results,
        "max_sustained_streams": max(sustained) if sustained else 0,
        "latency_single_stream": latency_at_one,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="auc,capacity", help="comma-separated: auc, capacity")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="trained head (default: the shipped model)"
    )
    parser.add_argument("--steps", default="1,2,4,6,8,12,16,24")
    parser.add_argument("--warmup-s", type=float, default=8.0)
    parser.add_argument("--measure-s", type=float, default=12.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parts = {p.strip() for p in args.parts.split(",")}
    report: dict = {}
    if "auc" in parts:
        report["auc"] = bench_auc(args.window, args.checkpoint)
        log.info("auc %s", report["auc"])
    if "capacity" in parts:
        steps = [int(s) for s in args.steps.split(",")]
        report["capacity"] = bench_capacity(steps, args.warmup_s, args.measure_s)
    try:
        import os

        report["load_average"] = os.getloadavg()
    except OSError:
        pass
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
