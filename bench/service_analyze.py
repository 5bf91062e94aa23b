"""Service overhead: `POST /analyze` on the running service vs `engine.analyze` in-process, on the same video.

Run from the repository root::

    .venv/bin/python -m bench.service_analyze               # ~1 minute on a 2-core CPU
    .venv/bin/python -m bench.service_analyze --repeats 10 --rounds 5 --device cuda

The video is real footage: UCSD Ped2 test clip 01 (180 frames, 360x240, 10 fps) played `--repeats` times, encoded
to mp4. The service is `refinevad serve` in a subprocess with its defaults (shipped model, CPU or GPU, SQLite in a
temporary data directory), answering synchronously; each request uploads the file, waits for the analysis and reads
the JSON result, so the service time includes upload, probe, queueing, the database and serialisation. The
in-process engine is built from the same settings. Rounds alternate service and in-process runs; medians and
minima are reported (on a shared machine the minimum is the least disturbed round), with the load average.
Ratio = service seconds / in-process seconds (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import httpx

from model.inference import AnalysisEngine
from service.model_service import engine_config
from service.settings import ServiceSettings

log = logging.getLogger("bench.service_analyze")
REPO_ROOT = Path(__file__).resolve().parents[1]
# The shared real data beside the checkout (or $REFINEVAD_SHARED_DATA), read in place.
SHARED_DATA = Path(os.environ.get("REFINEVAD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
SETTLE_S = 1.0  # pause between measured runs (see run_videos)
PED2_CLIP = SHARED_DATA / "ped2" / "testing" / "frames" / "01"


def encode_video(dest: Path, frames_dir: Path, repeats: int, fps: float = 10.0, multiple_of: int = 1) -> int:
    """The frames of `frames_dir` played `repeats` times, as mp4; the frame count is trimmed to a multiple of
    `multiple_of` (16 makes every snippet whole, so a looping replay has no partial snippet to skip)."""
    files = sorted(frames_dir.glob("*.jpg"))
    if not files:
        raise SystemExit(f"no frames under {frames_dir}")
    frames = [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files] * repeats
    frames = frames[: max(multiple_of, len(frames) - len(frames) % multiple_of)]
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return len(frames)


def encode_upscaled(
    dest: Path, frames_dir: Path, seconds: float, fps: float = 30.0, size: tuple[int, int] = (1920, 1080)
) -> int:
    """About `seconds` of video at `fps` and `size` (w, h) made of real frames upscaled with OpenCV (bicubic);
    the frame count is rounded up to whole 16-frame snippets."""
    files = sorted(frames_dir.glob("*.jpg"))
    if not files:
        raise SystemExit(f"no frames under {frames_dir}")
    count = -(-max(1, round(seconds * fps)) // 16) * 16
    writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {dest}")
    try:
        for i in range(count):
            frame = cv2.imread(str(files[i % len(files)]), cv2.IMREAD_COLOR)
            writer.write(cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC))
    finally:
        writer.release()
    return count


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(
    data_dir: Path, device: str, sync_seconds: float, settings: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """`refinevad serve` in a subprocess on a free port; `settings` are extra REFINEVAD_* variables."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFINEVAD_")}
    env.update(
        REFINEVAD_DATA_DIR=str(data_dir),
        REFINEVAD_DEVICE=device,
        REFINEVAD_SYNC_MAX_SECONDS=str(sync_seconds),
        REFINEVAD_MAX_UPLOAD_MB="4096",
    )
    env.update(settings or {})
    log_path = data_dir.parent / "service.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--log-level", "warning"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited at start; its log ends:\n{_tail(log_path)}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_service(proc)
    raise RuntimeError(f"the service was not ready within 120 s; its log ends:\n{_tail(log_path)}")


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def post_once(client: httpx.Client, video: Path) -> float:
    start = time.perf_counter()
    with video.open("rb") as handle:
        response = client.post("/analyze", files={"file": (video.name, handle, "video/mp4")})
    response.raise_for_status()
    body = response.json()
    if body["status"] != "succeeded":
        raise RuntimeError(f"analysis did not succeed: {body}")
    return time.perf_counter() - start


def stop_service(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def run_videos(videos: dict[str, Path], device: str, rounds: int, workdir: Path) -> dict[str, object]:
    """End to end: each video POSTed to /analyze on the service and analysed in-process, rounds alternating;
    speed as frames/s and as a multiple of real time (video duration / wall time)."""
    settings = ServiceSettings(device=device, data_dir=workdir / "unused")
    engine = AnalysisEngine.from_config(engine_config(settings))
    engine.warmup()
    infos = {label: engine.probe(path) for label, path in videos.items()}
    longest = max((info.duration_s or 0.0) for info in infos.values())
    proc, url = start_service(workdir / "data", device, sync_seconds=longest + 3600)
    rows = []
    try:
        with httpx.Client(base_url=url, timeout=3600) as client:
            for label, path in videos.items():
                info = infos[label]
                # The first run of each size pays lazy start-up costs, on both sides.
                post_once(client, path)
                engine.analyze(path)
                service_s, inprocess_s, frames = [], [], 0
                for _ in range(rounds):
                    service_s.append(post_once(client, path))
                    # The service still stores the job after it answers; on a small CPU that work would
                    # otherwise land inside the in-process measurement.
                    time.sleep(SETTLE_S)
                    start = time.perf_counter()
                    result = engine.analyze(path)
                    inprocess_s.append(time.perf_counter() - start)
                    frames = result.frames
                    time.sleep(SETTLE_S)
                duration = frames / info.fps
                service_med, inprocess_med = statistics.median(service_s), statistics.median(inprocess_s)
                rows.append(
                    {
                        "video": label,
                        "width": info.width,
                        "height": info.height,
                        "fps": info.fps,
                        "frames": frames,
                        "duration_s": duration,
                        "service_s": service_med,
                        "inprocess_s": inprocess_med,
                        "service_frames_per_s": frames / service_med,
                        "service_x_realtime": duration / service_med,
                        "inprocess_x_realtime": duration / inprocess_med,
                        "service_over_inprocess": service_med / inprocess_med,
                        "rounds_service_s": service_s,
                        "rounds_inprocess_s": inprocess_s,
                    }
                )
                log.info("e2e %s", rows[-1])
    finally:
        stop_service(proc)
    return {
        "model": {"backbone": engine.identity.backbone.key(), "trained": engine.identity.trained},
        "device": str(engine.device),
        "rounds": rounds,
        "videos": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--video", type=Path, help="analyse this file instead of the Ped2 clip")
    parser.add_argument("--repeats", type=int, default=5, help="times the Ped2 clip is played back to back")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(prefix="refinevad-bench-") as tmp:
        root = Path(tmp)
        video = args.video or root / "ped2-01-looped.mp4"
        if args.video is None:
            encode_video(video, PED2_CLIP, args.repeats)
        settings = ServiceSettings(device=args.device, data_dir=root / "unused")
        engine = AnalysisEngine.from_config(engine_config(settings))
        engine.warmup()
        info = engine.probe(video)
        log.info("video %s: %s", video.name, info)

        proc, url = start_service(root / "data", args.device, sync_seconds=(info.duration_s or 0) + 3600)
        service_s: list[float] = []
        inprocess_s: list[float] = []
        frames = 0
        try:
            with httpx.Client(base_url=url, timeout=3600) as client:
                post_once(client, video)  # first request pays lazy start-up costs on both sides
                engine.analyze(video)
                for round_index in range(args.rounds):
                    service_s.append(post_once(client, video))
                    start = time.perf_counter()
                    result = engine.analyze(video)
                    inprocess_s.append(time.perf_counter() - start)
                    frames = result.frames
                    time.sleep(SETTLE_S)
                    log.info(
                        "round %d: service %.3fs, in-process %.3fs",
                        round_index + 1,
                        service_s[-1],
                        inprocess_s[-1],
                    )
        finally:
            stop_service(proc)

    service_med, inprocess_med = statistics.median(service_s), statistics.median(inprocess_s)
    report = {
        "video": {"frames": frames, "width": info.width, "height": info.height, "fps": info.fps},
        "model": {"backbone": engine.identity.backbone.key(), "trained": engine.identity.trained},
        "device": str(engine.device),
        # What computed the features (e.g. the appearance network in ONNX Runtime), after the start-up checks.
        "backbone_path": engine.acceleration.backbone.path if engine.acceleration else None,
        "cpu_threads": os.cpu_count(),
        "rounds": args.rounds,
        "service_s_median": round(service_med, 4),
        "inprocess_s_median": round(inprocess_med, 4),
        "service_frames_per_s": round(frames / service_med, 1),
        "inprocess_frames_per_s": round(frames / inprocess_med, 1),
        "service_over_inprocess_ratio": round(service_med / inprocess_med, 3),
        # The fastest round is the least disturbed by other load on the machine.
        "service_s_min": round(min(service_s), 4),
        "inprocess_s_min": round(min(inprocess_s), 4),
        "service_over_inprocess_ratio_min": round(min(service_s) / min(inprocess_s), 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "service_s": [round(s, 4) for s in service_s],
        "inprocess_s": [round(s, 4) for s in inprocess_s],
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
