"""Live capacity with synthetic cameras: how many real-time streams the scheduler sustains when decoding is not
the limit.

    .venv/bin/python -m bench.synthetic_streams --device cuda --backbone clip --steps 32,64,100,128,192,256
    .venv/bin/python -m bench.synthetic_streams --device cpu --steps 1,2 --width 320 --height 240 --measure-s 5

Each stream is the service's own `StreamReader` on an in-process source that hands out frames of `--width` x
`--height` at `--fps` in real time (a few pre-generated moving snippets, no decoding and no copy), feeding the
real `LiveScheduler` (one batched backbone call per cycle, device-side windows, the head, events, message
serialisation) with the model the service would load. At each stream count, after a warm-up, a window of
`--measure-s` seconds is observed: capture-to-message latency of every provisional message (the scheduler's own
`latency_s`, taken when the message is handed to the WebSocket hub), frames dropped for lag, and the processed
frame rate. A step is sustained when p95 latency is under `--p95-goal-s`, no frame was dropped for lag and every
stream was processed at 90 % of its frame rate or more (a pipeline that falls behind without dropping yet is not
keeping up).

`--backbone clip` uses a random-weight CLIP `--clip-arch` (speed does not depend on the weights) sampling
`--sampled` frames per snippet, with an untrained head on its features. The JSON report (`--out`) records the
machine, the steps and which path served each stage (`acceleration`).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from model.video.decode_report import DecodeReport
from model.video.source import VideoSource
from service.publishers.base import Outgoing, Publisher, SnippetsScored

log = logging.getLogger("bench.synthetic_streams")

KEEP_UP = 0.9  # share of the camera's frame rate a sustained stream is processed at
SNIPPETS_IN_RING = 4  # distinct pre-generated snippets a source cycles through


DISTINCT_RINGS = 8  # streams share pre-generated frames: 256 cameras x 64 1080p frames each would be 100 GB
_RINGS: dict[tuple[int, int, int, int], np.ndarray] = {}
_RINGS_LOCK = threading.Lock()


def _ring(width: int, height: int, frames: int, variant: int) -> np.ndarray:
    """`[SNIPPETS_IN_RING, frames, height, width, 3]` uint8: a moving diagonal pattern in one of a few colours,
    cheap to make and not constant for the encoder; made once per variant and shared read-only."""
    key = (width, height, frames, variant)
    with _RINGS_LOCK:
        if key not in _RINGS:
            y, x = np.ogrid[0:height, 0:width]
            base = ((x + y) % 256).astype(np.uint8)
            step = ((8 * np.arange(SNIPPETS_IN_RING * frames)) % 256).astype(np.uint8).reshape(-1, 1, 1)
            wave = base[None] + step  # uint8 arithmetic wraps modulo 256
            colour = np.random.default_rng(variant).integers(0, 256, 3, dtype=np.uint8)
            ring = np.empty((SNIPPETS_IN_RING * frames, height, width, 3), np.uint8)
            ring[...] = colour
            ring[..., 1] = wave
            _RINGS[key] = ring.reshape(SNIPPETS_IN_RING, frames, height, width, 3)
        return _RINGS[key]


class SyntheticSource(VideoSource):
    """A camera in memory: `read_batch(n)` returns a view of a pre-generated snippet once its last frame is due,
    so frames arrive at `fps` like a live camera, at no decoding cost."""

    @property
    def is_stream(self) -> bool:
        return True

    def __init__(self, uri: str, width: int, height: int, fps: float, frames: int, seed: int) -> None:
        self.uri, self.width, self.height, self.fps, self.frame_count = uri, width, height, fps, None
        self._ring = _ring(width, height, frames, seed % DISTINCT_RINGS)
        self.report = DecodeReport(frames_announced=None, clock="frame_rate")
        self._frames = frames
        self._next = 0
        phase = np.random.default_rng(seed).uniform(0, frames / fps)  # cameras are not in phase
        self._start = time.monotonic() + phase
        self._stop = threading.Event()

    def read_batch(self, n: int) -> np.ndarray:
        if n != self._frames:
            raise ValueError(f"this source hands out snippets of {self._frames} frames, not {n}")
        due = self._start + (self._next + 1) * n / self.fps
        if self._stop.wait(max(0.0, due - time.monotonic())):
            return np.empty((0, self.height, self.width, 3), np.uint8)
        batch = self._ring[self._next % SNIPPETS_IN_RING]
        self._next += 1
        self.last_frame_mono = time.monotonic()
        return batch

    def close(self) -> None:
        self._stop.set()


class LatencyRecorder(Publisher):
    """A publisher beside the WebSocket one: records each provisional message's capture-to-message latency."""

    name = "latency-recorder"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []

    def publish(self, message: Outgoing) -> None:
        if not isinstance(message, SnippetsScored):
            return
        values = [
            parsed["latency_s"]
            for _, text in message.items
            if (parsed := json.loads(text)).get("status") == "provisional"
        ]
        with self.lock:
            self.latencies.extend(values)

    def take(self) -> list[float]:
        with self.lock:
            values, self.latencies = self.latencies, []
        return values


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from bench.suite import Inputs, Sizes, machine_info
    from model.events import EventPolicy
    from model.inference import resolve_device
    from service.live.events import LiveEventStore
    from service.live.hub import LiveHub
    from service.live.metrics import LiveMetrics
    from service.live.readers import StreamReader
    from service.live.scheduler import LiveScheduler, LiveStream
    from service.metrics import ServiceMetrics
    from service.model_service import ModelService
    from service.publishers.dispatcher import Dispatcher
    from service.publishers.websocket import WebSocketPublisher
    from service.settings import ServiceSettings
    from service.storage import Database

    device = resolve_device(args.device)
    workdir = Path(tempfile.mkdtemp(prefix="refinevad-synthetic-"))
    overrides: dict[str, Any] = {
        "data_dir": workdir / "data",
        "device": str(device.type),
        "head_backend": args.head_backend,
    }
    if args.backbone == "clip":
        weights, checkpoint = Inputs(workdir, Sizes()).clip_model(args.clip_arch, args.sampled)
        overrides.update(
            backbone="clip", clip_arch=args.clip_arch, clip_checkpoint=weights, model_checkpoint=checkpoint
        )
    settings = ServiceSettings(**overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    metrics = ServiceMetrics()
    model = ModelService(settings, metrics)
    model.start()
    if not model.wait_until_loaded(600):
        raise RuntimeError(f"the model did not load: {model.error}")
    engine = model.engine()
    db = Database(settings.database_path)
    recorder = LatencyRecorder()
    dispatcher = Dispatcher()
    dispatcher.add(recorder)
    dispatcher.add(WebSocketPublisher(LiveHub(settings.live_client_queue, settings.live_replay)))
    scheduler = LiveScheduler(
        model, dispatcher, LiveEventStore(db), LiveMetrics(metrics), settings.live_window
    )
    scheduler.start()
    spec = engine.spec
    streams: list[LiveStream] = []

    # Every camera's frames exist before the first one starts: made on demand, they held back the cameras opened
    # after them (about 1-2 s per 1080p ring, one at a time) and made the first steps look slow.
    for variant in range(min(DISTINCT_RINGS, max(args.steps))):
        _ring(args.width, args.height, spec.frames_per_snippet, variant)

    def add_stream(i: int) -> None:
        def opener(url: str, **_: object) -> SyntheticSource:
            return SyntheticSource(url, args.width, args.height, args.fps, spec.frames_per_snippet, seed=i)

        reader = StreamReader(f"cam{i}", f"synthetic://cam{i}", spec, wake=scheduler.wake, opener=opener)
        stream = LiveStream(f"cam{i}", f"cam{i}", reader, EventPolicy(), time.time())
        scheduler.add(stream)
        reader.start()
        streams.append(stream)

    steps = []
    try:
        for n in args.steps:
            while len(streams) < n:
                add_stream(len(streams))
            time.sleep(args.warmup_s)
            recorder.take()
            dropped0 = sum(s.reader.stats.dropped_frames for s in streams)
            processed0 = sum(s.snippets_processed for s in streams)
            t0 = time.monotonic()
            time.sleep(args.measure_s)
            elapsed = time.monotonic() - t0
            latencies = recorder.take()
            dropped = sum(s.reader.stats.dropped_frames for s in streams) - dropped0
            processed = sum(s.snippets_processed for s in streams) - processed0
            p95 = float(np.percentile(latencies, 95)) if latencies else None
            fps_per_stream = processed * spec.frames_per_snippet / elapsed / n
            step = {
                "streams": n,
                "latency_p50_s": float(np.percentile(latencies, 50)) if latencies else None,
                "latency_p95_s": p95,
                "messages": len(latencies),
                "dropped_frames_lag": dropped,
                "processed_fps_per_stream": fps_per_stream,
                "sustained": p95 is not None
                and p95 < args.p95_goal_s
                and dropped == 0
                and fps_per_stream >= KEEP_UP * args.fps,
            }
            log.info("%s", step)
            steps.append(step)
            if not step["sustained"] and not args.keep_going:
                break
    finally:
        for stream in streams:
            stream.reader.stop()
        scheduler.stop()
        db.close()
        engine.backbone.close()
    sustained = [s["streams"] for s in steps if s["sustained"]]
    return {
        "bench": "synthetic_streams",
        "machine": machine_info(device),
        "torch_cuda": torch.version.cuda,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": engine.identity.backbone.key(),
        "sampled_frames_per_snippet": spec.sampled_frames_per_snippet,
        "acceleration": engine.acceleration.model_dump(mode="json") if engine.acceleration else None,
        "steps": steps,
        "max_sustained_streams": max(sustained) if sustained else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--backbone",
        default="clip",
        choices=("clip", "default"),
        help="clip: a random-weight CLIP; default: the shipped default model and its backbone",
    )
    parser.add_argument("--clip-arch", default="ViT-B-16")
    parser.add_argument(
        "--head-backend",
        default="torch",
        help="the service's head_backend (e.g. cuda-graph); checked at start-up",
    )
    parser.add_argument("--sampled", type=int, default=4, help="frames per snippet the backbone sees")
    parser.add_argument(
        "--steps", type=lambda s: [int(v) for v in s.split(",")], default=[32, 64, 100, 128, 192, 256]
    )
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--measure-s", type=float, default=20.0)
    parser.add_argument("--p95-goal-s", type=float, default=1.0)
    parser.add_argument("--keep-going", action="store_true", help="measure every step even after one fails")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default: stdout only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = run(args)
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    for step in report["steps"]:
        print(
            f"{step['streams']:4d} streams: p95 {step['latency_p95_s']} s, lag drops {step['dropped_frames_lag']}, "
            f"{step['processed_fps_per_stream']:.1f} fps/stream, sustained={step['sustained']}"
        )
    print(f"max sustained: {report['max_sustained_streams']} streams (goal: p95 < {args.p95_goal_s} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
