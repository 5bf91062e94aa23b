"""Extraction throughput: decode alone vs decode + encode (motion, two-stream, CLIP), as frames/s and ratios to
decode, and the two-stream backbone (the default model's) with its appearance network in eager PyTorch and in
ONNX Runtime side by side.

Run from the repository root::

    .venv/bin/python -m bench.extraction                 # 1-2 minutes on a 2-core CPU
    .venv/bin/python -m bench.extraction --device cuda --clip-frames 512 --rounds 5

Every configuration decodes the same video (by default a UCSD Ped2 test clip encoded to mp4, 360x240) through
the real source -> snippet -> backbone path, in the same process, round-robin over `--rounds` rounds; the
median round is reported. CLIP uses random weights (`pretrained=None`): speed does not depend on the values.
CLIP configurations stop after `--clip-frames` frames to keep the run short on CPU. Rates count source
frames covered per second, so sub-sampling (4 of 16 frames encoded) shows as a higher rate.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from model.backbones.base import Backbone
from model.backbones.registry import BackboneConfig, load_backbone
from model.video.snippets import SnippetSpec, iter_snippet_batches
from model.video.source import open_source

if TYPE_CHECKING:
    from model.inference import AnalysisEngine

log = logging.getLogger("bench.extraction")


def _run(
    video: Path, spec: SnippetSpec, backbone: Backbone | None, max_frames: int | None
) -> tuple[int, float]:
    """Decode (and encode) the video once; returns (source frames covered, seconds)."""
    start = time.perf_counter()
    frames = 0
    with open_source(video) as source:
        for batch in iter_snippet_batches(source, spec, snippets_per_batch=4):
            if backbone is not None:
                out = backbone.encode_snippets(batch.frames)
                if out.is_cuda:
                    torch.cuda.synchronize()
            frames = int(batch.end_frames[-1])
            if max_frames is not None and frames >= max_frames:
                break
    return frames, time.perf_counter() - start


def _single_cv2_thread(fn: Callable[[], tuple[int, float]]) -> Callable[[], tuple[int, float]]:
    def run() -> tuple[int, float]:
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            return fn()
        finally:
            cv2.setNumThreads(threads)

    return run


# -- images/s per backbone, precision and batch size (used by bench.suite) -----------------------------------


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rate(
    fn: Callable[[], int], device: torch.device, min_seconds: float, max_calls: int, warmup: bool = True
) -> float:
    """Items/s of `fn` (which returns the items it handled): a warm-up call (unless `warmup` is False: a
    seconds-long CPU call gains little from one), then calls until `min_seconds` have passed (at least one
    call, at most `max_calls`)."""
    if warmup:
        fn()
        _synchronize(device)
    items, calls = 0, 0
    start = time.perf_counter()
    while calls < 1 or (time.perf_counter() - start < min_seconds and calls < max_calls):
        items += fn()
        calls += 1
    _synchronize(device)
    return items / (time.perf_counter() - start)


def _encode_count(backbone: Backbone, frames: np.ndarray) -> int:
    """Encode once; the number of images encoded."""
    if frames.ndim == 5:
        backbone.encode_snippets(frames)
        return frames.shape[0] * frames.shape[1]
    backbone.encode_frames(frames)  # type: ignore[attr-defined]
    return len(frames)


def load_frames(folder: Path, count: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """`count` real RGB frames [count, H, W, 3] from a frame folder (cycled), optionally resized to (w, h)."""
    files = sorted(folder.glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"no frames under {folder}")
    frames = []
    for i in range(count):
        bgr = cv2.imread(str(files[i % len(files)]), cv2.IMREAD_COLOR)
        if size is not None:
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_CUBIC)
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def motion_rates(
    frames: np.ndarray, snippet_batches: list[int], device: torch.device, min_seconds: float
) -> list[dict[str, object]]:
    """Motion descriptor images/s for each number of 16-frame snippets per call."""
    motion = load_backbone(BackboneConfig(name="motion"), device)
    h, w = frames.shape[1:3]
    rows = []
    for snippets in snippet_batches:
        batch = np.stack([frames[(np.arange(16) + 16 * i) % len(frames)] for i in range(snippets)])
        rate = timed_rate(partial(_encode_count, motion, batch), device, min_seconds, max_calls=1000)
        rows.append(
            {
                "backbone": "motion",
                "precision": "fp32",
                "input": f"{w}x{h}",
                "batch_images": snippets * 16,
                "images_per_s": rate,
            }
        )
    return rows


def clip_rates(
    arch: str,
    precisions: list[str],
    batches: list[int],
    frames: np.ndarray,
    device: torch.device,
    min_seconds: float,
    max_calls: int,
) -> list[dict[str, object]]:
    """CLIP image-encoder images/s (random weights; uint8 frames in, preprocessing on the device included)."""
    rows = []
    h, w = frames.shape[1:3]
    for precision in precisions:
        config = BackboneConfig(name="clip", clip_arch=arch, clip_pretrained=None, precision=precision)
        clip = load_backbone(config, device)
        clip.encode_frames(frames[:1])  # first-call initialisation, outside the measurements
        for batch in batches:
            clip.batch_size = batch
            chunk = frames[np.arange(batch) % len(frames)]
            rate = timed_rate(
                partial(_encode_count, clip, chunk),
                device,
                min_seconds,
                max_calls,
                warmup=device.type == "cuda",
            )
            rows.append(
                {
                    "backbone": f"clip {arch}",
                    "precision": precision,
                    "input": f"{w}x{h}",
                    "batch_images": batch,
                    "images_per_s": rate,
                }
            )
        clip.close()
    return rows


def time_shares(engine: AnalysisEngine, video: Path, max_snippets: int | None = None) -> dict[str, object]:
    """Where one video's analysis time goes: decode, preprocessing, backbone, head (seconds and shares).

    The backbone is called in its two halves (preprocess, then the encoder on the preprocessed frames) so each
    is timed alone; the features equal `encode_snippets` (checked on the first batch for the motion backbone).
    Two-stream: both streams' preprocessing, then the appearance network and the motion descriptor.
    """
    from model.backbones.clip import ClipBackbone
    from model.backbones.efficientnet import (
        EfficientNetLite0Backbone,
        pool_feature_map,
        sampled_frame_indices,
    )
    from model.backbones.motion import MotionBackbone
    from model.backbones.two_stream import TwoStreamBackbone

    backbone, device = engine.backbone, engine.device
    seconds = {"decode": 0.0, "preprocess": 0.0, "backbone": 0.0, "head": 0.0}
    features: list[torch.Tensor] = []
    frames_done = 0
    with open_source(video) as source, torch.inference_mode():
        batches = iter_snippet_batches(source, engine.spec, engine.config.snippets_per_batch)
        while max_snippets is None or sum(len(f) for f in features) < max_snippets:
            t0 = time.perf_counter()
            batch = next(batches, None)
            t1 = time.perf_counter()
            seconds["decode"] += t1 - t0
            if batch is None:
                break
            frames = batch.frames
            s, f, h, w = frames.shape[:4]
            if isinstance(backbone, MotionBackbone):
                grey = backbone.preprocess(frames)
                t2 = time.perf_counter()
                out = torch.from_numpy(backbone.describe_grey(grey)).to(device)
                if not features and not torch.equal(out, backbone.encode_snippets(frames)):
                    raise AssertionError("motion preprocess + describe_grey differs from encode_snippets")
            elif isinstance(backbone, ClipBackbone):
                pixels = backbone.preprocess(torch.from_numpy(frames.reshape(s * f, h, w, 3)).to(device))
                _synchronize(device)
                t2 = time.perf_counter()
                out = torch.cat([backbone.visual(c).float() for c in pixels.split(backbone.batch_size)])
                out = out.view(s, f, -1).mean(dim=1)
                _synchronize(device)
            elif isinstance(backbone, TwoStreamBackbone | EfficientNetLite0Backbone):
                appearance = backbone.appearance if isinstance(backbone, TwoStreamBackbone) else backbone
                index = sampled_frame_indices(f, appearance.frames)
                picked = np.ascontiguousarray(frames[:, index]).reshape(s * len(index), h, w, 3)
                pixels = appearance.preprocess(torch.from_numpy(picked).to(device))
                grey = backbone.motion.preprocess(frames) if appearance is not backbone else None
                _synchronize(device)
                t2 = time.perf_counter()
                maps = [appearance.map_pixels(c) for c in pixels.split(appearance.batch_size)]
                out = torch.cat([pool_feature_map(m, appearance.pooling) for m in maps])
                out = out.view(s, len(index), -1).mean(dim=1)
                if grey is not None:
                    motion = torch.from_numpy(backbone.motion.describe_grey(grey)).to(device)
                    out = torch.cat([out, motion], dim=1)
                _synchronize(device)
            else:
                raise TypeError(f"no breakdown for {type(backbone).__name__}")
            t3 = time.perf_counter()
            seconds["preprocess"] += t2 - t1
            seconds["backbone"] += t3 - t2
            features.append(out)
            frames_done = int(batch.end_frames[-1])
        t0 = time.perf_counter()
        feats = torch.cat(features)
        engine.run_head(feats)
        engine.local_categories(feats)
        _synchronize(device)
        seconds["head"] = time.perf_counter() - t0
    total = sum(seconds.values())
    return {
        "backbone": backbone.identity.key(),
        "sampled_frames_per_snippet": engine.spec.sampled_frames_per_snippet,
        "frames": frames_done,
        "snippets": int(feats.shape[0]),
        "seconds": seconds,
        "share": {k: v / total for k, v in seconds.items()},
        "frames_per_s": frames_done / total,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--video", type=Path, help="video file or frame folder (default: Ped2 test clip 01)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clip-arch", default="ViT-B-16")
    parser.add_argument("--clip-frames", type=int, default=8, help="frames per CLIP measurement")
    parser.add_argument("--clip-batch", type=int, default=64, help="frames per CLIP forward pass")
    parser.add_argument("--no-clip", action="store_true")
    parser.add_argument("--no-two-stream", action="store_true", help="skip the two-stream configurations")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    # WARNING: open_clip logs every step of model creation at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        video = args.video
        if video is None:
            from tests.footage import encode_ped2_clip

            video = encode_ped2_clip(Path(tmp) / "ped2_test01.mp4")
        full, sub4 = SnippetSpec(), SnippetSpec(sampled_frames_per_snippet=4)
        motion = load_backbone(BackboneConfig(name="motion"), args.device)
        configs: dict[str, Callable[[], tuple[int, float]]] = {
            "decode only": lambda: _run(video, full, None, None),
            "decode + motion": lambda: _run(video, full, motion, None),
            "decode + motion (1 cv2 thread)": _single_cv2_thread(lambda: _run(video, full, motion, None)),
        }
        eager_two_stream = fast_two_stream = None
        if not args.no_two_stream:
            from exporters.appearance_onnx import accelerate

            eager_two_stream = load_backbone(BackboneConfig(name="two_stream"), args.device)
            fast_two_stream = accelerate(eager_two_stream)
            configs["decode + two_stream (eager)"] = lambda: _run(video, full, eager_two_stream, None)
            configs["decode + two_stream (onnxruntime)"] = lambda: _run(video, full, fast_two_stream, None)
        if not args.no_clip:
            clip_config = BackboneConfig(
                name="clip", clip_arch=args.clip_arch, clip_pretrained=None, batch_size=args.clip_batch
            )
            clip = load_backbone(clip_config, args.device)
            configs[f"decode + CLIP {args.clip_arch}"] = lambda: _run(video, full, clip, args.clip_frames)
            configs[f"decode + CLIP {args.clip_arch}, 4 of 16 frames"] = lambda: _run(
                video, sub4, clip, args.clip_frames * 4
            )
        # Warm-up (file cache, allocator, lazy initialisation) outside the measured rounds.
        _run(video, full, motion, 64)
        for backbone in (eager_two_stream, fast_two_stream):
            if backbone is not None:
                _run(video, full, backbone, 64)
        if not args.no_clip:
            _run(video, full, clip, 16)
        samples: dict[str, list[tuple[int, float]]] = {name: [] for name in configs}
        for _ in range(args.rounds):
            for name, fn in configs.items():
                samples[name].append(fn())

    rates = {
        name: statistics.median(frames / seconds for frames, seconds in runs)
        for name, runs in samples.items()
    }
    decode = rates["decode only"]
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"\nextraction throughput on {device} ({torch.get_num_threads()} torch threads, "
        f"{cv2.getNumThreads()} cv2 threads), video {video.name if args.video else 'Ped2 testing/01 (mp4)'}"
    )
    print(f"{'configuration':<46} {'frames/s':>10} {'vs decode':>10}")
    for name, rate in rates.items():
        print(f"{name:<46} {rate:>10.1f} {rate / decode:>10.3g}")
    runtime_ratio = None
    if not args.no_two_stream:
        runtime_ratio = rates["decode + two_stream (onnxruntime)"] / rates["decode + two_stream (eager)"]
        print(f"two_stream with ONNX Runtime vs eager appearance network: {runtime_ratio:.2f}x the frames/s")
    if args.json:
        payload = {
            "device": device,
            "frames_per_second": rates,
            "ratio_to_decode": {k: v / decode for k, v in rates.items()},
            "two_stream_onnxruntime_over_eager": runtime_ratio,
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
