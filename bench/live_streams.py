"""Live streams: capture-to-message latency, concurrent real-time streams sustained, and the offline-vs-live AUC gap.

Run from the repository root (needs the GStreamer RTSP server packages for the first two parts)::

    .venv/bin/python -m bench.live_streams                 # all three parts, a few minutes on a 2-core CPU
    .venv/bin/python -m bench.live_streams --parts auc     # only the AUC gap (in-process, ~1 minute)

- capacity + latency: `refinevad serve` in a subprocess with the shipped default model, and a real GStreamer
  RTSP server serving Ped2 test clip 01 at 10 fps. Streams (each its own RTSP connection) are added in steps; at
  each step, after a warm-up, a window of `--measure-s` seconds is observed. A step is sustained when no frame
  was dropped for lag, every stream received and had scored at least 95 % of the camera's 10 fps (less one
  snippet: the counters move 16 frames at a time, so the default 24 s window accepts >= 8.8 fps) and the p95
  latency stayed under 2 s. Latency is measured at the client: the wall clock when a WebSocket message arrives
  minus the stream's capture time of the snippet's last frame (`captured_at`), for the provisional messages of
  one stream (p50/p95). A final score comes one snippet (1.6 s) after its provisional.
- auc: every clip of the Ped2 weak TEST split (wvad_split.json: 4 normal + 6 anomalous clips) scored whole
  (`AnalysisEngine.analyze`) and through the live window (features appended one snippet at a time to a W-snippet
  device window, final score = the head on the window that ends one snippet later, the last snippet
  provisional), frame-level AUC over all test frames (sklearn roc_auc_score), and the share of snippets above
  0.5 on anomalous clips whose dominant category is the clip's own, offline and live.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

log = logging.getLogger("bench.live_streams")

CAMERA_FPS = 10.0  # the test RTSP camera's frame rate
MAX_LATENCY_S = 2.0  # p95 capture-to-message a sustained step stays under
PED2 = Path(os.environ.get("REFINEVAD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "ped2"


def _category_agreement(
    dominant: list[str], scores: np.ndarray, category: str | None, threshold: float
) -> dict:
    """Of the snippets above `threshold`, how many name the clip's own category as dominant."""
    high = [name for name, score in zip(dominant, scores, strict=True) if score > threshold]
    return {"high": len(high), "agree": sum(name == category for name in high)}


def bench_auc(window: int, checkpoint: Path | None, threshold: float = 0.5) -> dict:
    """Frame AUC of the weak TEST split (4 normal + 6 anomalous clips; never the training clips) scored offline
    and through the live window, and how often the dominant category of a snippet scoring above `threshold`
    is its anomalous clip's category (offline: the snippet's local distribution; live: its final message's)."""
    from sklearn.metrics import roc_auc_score

    import exporters.backends  # noqa: F401  (the service's runtimes, e.g. ONNX Runtime for the appearance network)
    from model.data.ped2 import Ped2Dataset
    from model.inference import AnalysisEngine, EngineConfig
    from model.scoring import live_window_scores

    engine = AnalysisEngine.from_config(EngineConfig(device="cpu", checkpoint=checkpoint))
    dataset = Ped2Dataset(PED2)
    clips = dataset.split("test")
    f = engine.spec.frames_per_snippet
    names = engine.category_names
    offline_all, live_all, truth = [], [], []
    agreement = {"offline": {"high": 0, "agree": 0}, "live": {"high": 0, "agree": 0}}
    per_clip = []
    for clip in clips:
        folder = dataset.path(clip)
        frame_labels = dataset.frame_labels(clip)
        result = engine.analyze(folder)
        offline = np.array([s.score for s in result.snippets])
        features = engine.encode(folder)[0]
        live_t, live_categories_t = live_window_scores(engine.head, features, window)
        live, live_categories = live_t.cpu().numpy(), live_categories_t.cpu().numpy()
        n = len(frame_labels)
        offline_all.append(np.repeat(offline, f)[:n])
        live_all.append(np.repeat(live, f)[:n])
        truth.append(frame_labels)
        row = {"clip": clip.name, "label": clip.label, "category": clip.category}
        if clip.label:
            offline_dominant = [max(s.categories, key=s.categories.get) for s in result.snippets]
            live_dominant = [names[i] for i in live_categories.argmax(1)]
            for mode, dominant, scores in (
                ("offline", offline_dominant, offline),
                ("live", live_dominant, live),
            ):
                counts = _category_agreement(dominant, scores, clip.category, threshold)
                row[mode] = counts
                for key in counts:
                    agreement[mode][key] += counts[key]
        per_clip.append(row)
    y = np.concatenate(truth)
    off, liv = np.concatenate(offline_all), np.concatenate(live_all)
    auc_off, auc_live = float(roc_auc_score(y, off)), float(roc_auc_score(y, liv))
    return {
        "split": "test (wvad_split.json: 4 normal + 6 anomalous clips)",
        "clips": len(clips),
        "frames": len(y),
        "trained_model": engine.identity.trained,
        "backbone": engine.identity.backbone.key(),
        "window": window,
        "auc_offline": round(auc_off, 4),
        "auc_live": round(auc_live, 4),
        "auc_gap": round(auc_live - auc_off, 4),
        "mean_abs_score_diff": round(float(np.abs(off - liv).mean()), 4),
        "category_agreement_above_threshold": {
            mode: {
                **counts,
                "fraction": round(counts["agree"] / counts["high"], 4) if counts["high"] else None,
            }
            for mode, counts in agreement.items()
        },
        "threshold": threshold,
        "per_clip": per_clip,
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


def bench_capacity(steps: list[int], warmup_s: float, measure_s: float, model: str | None = None) -> dict:
    """`model`: the service's `model_checkpoint` (a shipped name such as `v3`, or a path); None: the default."""
    from tests.rtsp_server import RtspServerProcess
    from tests.service.live.service_process import API_KEY, ServiceProcess

    results = []
    latency_at_one: dict | None = None
    settings = {} if model is None else {"model_checkpoint": model}
    with tempfile.TemporaryDirectory() as tmp, RtspServerProcess() as camera:
        service = ServiceProcess(Path(tmp) / "data", Path(tmp) / "service.log", **settings).start()
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
                    frames_in = [after[i]["frames_in"] - before[i]["frames_in"] for i in ids]
                    frames_scored = [
                        (after[i]["snippets_processed"] - before[i]["snippets_processed"]) * 16 for i in ids
                    ]
                    # The counters move a snippet (16 frames) at a time: one snippet of slack at the window's
                    # boundaries, as in the synthetic plan's steps.
                    kept_up = 0.95 * CAMERA_FPS * measure_s - 16
                    p95 = _percentile(latencies, 95)
                    step = {
                        "streams": target,
                        "dropped_frames": dropped,
                        "min_fps_in": round(min(frames_in) / measure_s, 2),
                        "min_fps_processed": round(min(frames_scored) / measure_s, 2),
                        "latency_p50_s": _rounded(_percentile(latencies, 50)),
                        "latency_p95_s": _rounded(p95),
                        "sustained": dropped == 0
                        and min(frames_in) >= kept_up
                        and min(frames_scored) >= kept_up
                        and p95 is not None
                        and p95 < MAX_LATENCY_S,
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


# -- capacity over file replay (bench.suite): no RTSP server needed ----------------------------------------


class CapacityPlan(BaseModel):
    """How the largest sustained number of streams is searched: doubling, then bisecting, within a time bound."""

    max_latency_s: float = Field(
        2.0, description="p95 capture-to-message latency a sustained step stays under"
    )
    warmup_s: float = Field(6.0, description="after streams are added, before measuring")
    measure_s: float = Field(10.0, description="observation window of each step")
    start_streams: int = Field(1, ge=1, description="the first step's stream count")
    max_streams: int = Field(64, ge=1)
    growth: int = Field(2, ge=2, description="stream counts multiply by this until a step fails")
    bisect_steps: int = Field(
        1, ge=0, description="extra steps between the last good and the first bad count"
    )
    listen: int = Field(4, ge=1, description="streams whose WebSocket messages are timed at the client")
    time_budget_s: float = Field(
        120.0, description="no step starts that would end later than this after the service is ready"
    )


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _measure_step(client, ws_base: str, ids: list[str], plan: CapacityPlan, fps: float) -> dict:
    """Observe the registered streams for `measure_s`: client-side latency, lag drops, snippets scored."""
    stop, latencies = threading.Event(), []
    listeners = [
        threading.Thread(target=_latency_listener, args=(f"{ws_base}/streams/{i}/live", stop, latencies))
        for i in ids[: plan.listen]
    ]
    for listener in listeners:
        listener.start()
    before = {v["id"]: v for v in client.get("/streams").json()["items"]}
    time.sleep(plan.measure_s)
    after = {v["id"]: v for v in client.get("/streams").json()["items"]}
    stop.set()
    for listener in listeners:
        listener.join()
    dropped = sum(after[i]["dropped_frames"] - before[i]["dropped_frames"] for i in ids)
    # Snippets scored per stream vs those a real-time camera delivers in the window (one of slack: boundaries).
    expected = plan.measure_s * fps / 16
    scored = min(after[i]["snippets_processed"] - before[i]["snippets_processed"] for i in ids)
    p95 = _percentile(latencies, 95)
    return {
        "streams": len(ids),
        "dropped_frames": dropped,
        "min_snippets_scored": scored,
        "snippets_expected": round(expected, 2),
        "messages_timed": len(latencies),
        "latency_p50_s": _percentile(latencies, 50),
        "latency_p95_s": p95,
        "latency_max_s": max(latencies) if latencies else None,
        "sustained": dropped == 0 and scored >= expected - 1 and p95 is not None and p95 < plan.max_latency_s,
    }


def capacity_over_replay(
    video: Path, device: str, workdir: Path, plan: CapacityPlan, settings: dict[str, str] | None = None
) -> dict:
    """Largest number of concurrent real-time streams `refinevad serve` sustains (p95 latency < bound).

    Every stream replays `video` in a loop at its own frame rate through the service's real reader (a local
    file read as a camera would deliver it: decoded and paced in real time), so the machine pays decoding,
    the batched backbone and head, serialisation and WebSocket delivery, as for cameras.
    """
    import cv2
    import httpx

    from bench.service_analyze import start_service, stop_service

    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    capture.release()
    env = {
        "REFINEVAD_ALLOWED_SCHEMES": "file",
        "REFINEVAD_LIVE_MAX_STREAMS": str(plan.max_streams),
        **(settings or {}),
    }
    started = time.monotonic()
    proc, url = start_service(workdir / "data", device, sync_seconds=60, settings=env)
    ready = time.monotonic()  # the time bound counts from here: model loading is not the streams' cost
    ws_base = url.replace("http://", "ws://")
    steps: list[dict] = []
    good, bad = 0, None
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            ids: list[str] = []

            def resize(n: int) -> None:
                while len(ids) < n:
                    body = {"url": str(video), "name": f"replay {len(ids)}", "loop": True}
                    response = client.post("/streams", json=body)
                    response.raise_for_status()
                    ids.append(response.json()["id"])
                while len(ids) > n:
                    client.delete(f"/streams/{ids.pop()}").raise_for_status()

            def step(n: int) -> bool:
                resize(n)
                time.sleep(plan.warmup_s)
                result = _measure_step(client, ws_base, ids, plan, fps)
                log.info("live step %s", result)
                steps.append(result)
                return result["sustained"]

            def time_left() -> bool:
                # The first step always runs.
                spent = time.monotonic() - ready
                return not steps or spent + plan.warmup_s + plan.measure_s < plan.time_budget_s

            n = min(plan.start_streams, plan.max_streams)
            while n <= plan.max_streams and time_left():
                if not step(n):
                    bad = n
                    break
                good = n
                n = min(n * plan.growth, plan.max_streams) if n < plan.max_streams else n + 1
            for _ in range(plan.bisect_steps):
                if bad is None or bad - good <= 1 or not time_left():
                    break
                mid = (good + bad) // 2
                if step(mid):
                    good = mid
                else:
                    bad = mid
            resize(0)
    finally:
        stop_service(proc)
    at_best = next((s for s in steps if s["streams"] == good and s["sustained"]), None)
    return {
        "source": {"video": video.name, "width": width, "height": height, "fps": fps},
        "criterion": f"p95 capture-to-message < {plan.max_latency_s} s, no frame dropped for lag, "
        "every stream scored in real time",
        "max_sustained_streams": good,
        "first_failing_streams": bad,
        "search_complete": (bad is not None and bad - good <= 1) or good >= plan.max_streams,
        "latency_at_max": at_best,
        "steps": steps,
        "wall_s": time.monotonic() - started,
        "service_start_s": ready - started,
        "plan": plan.model_dump(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="auc,capacity", help="comma-separated: auc, capacity")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="trained head (default: the shipped model)"
    )
    parser.add_argument("--steps", default="1,2,4,6,8,12,16,24")
    parser.add_argument(
        "--capacity-models",
        default="default",
        help="comma-separated models the capacity part serves, one after the other (`default`, `v3`, a path); "
        "with several, the ratio of sustained streams to the first's is printed",
    )
    parser.add_argument("--warmup-s", type=float, default=8.0)
    parser.add_argument(
        "--measure-s", type=float, default=24.0, help="window per step (s); longer = less slack"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parts = {p.strip() for p in args.parts.split(",")}
    report: dict = {}
    if "auc" in parts:
        report["auc"] = bench_auc(args.window, args.checkpoint)
        log.info("auc %s", report["auc"])
    if "capacity" in parts:
        steps = [int(s) for s in args.steps.split(",")]
        models = [m.strip() for m in args.capacity_models.split(",") if m.strip()]
        by_model = {
            name: bench_capacity(steps, args.warmup_s, args.measure_s, None if name == "default" else name)
            for name in models
        }
        report["capacity"] = by_model[models[0]] if len(models) == 1 else by_model
        if len(models) > 1:
            first = by_model[models[0]]["max_sustained_streams"]
            for name in models[1:]:
                mine = by_model[name]["max_sustained_streams"]
                ratio = f"{mine / first:.2f}x" if first else "n/a"
                print(f"live capacity: {name} {mine} streams vs {models[0]} {first} ({ratio})")
    try:
        import os

        report["load_average"] = os.getloadavg()
    except OSError:
        pass
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
