"""Extraction throughput: decode alone vs decode + encode (motion, CLIP), as frames/s and ratios to decode.

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
from pathlib import Path

import cv2
import torch

from model.backbones.base import Backbone
from model.backbones.registry import BackboneConfig, load_backbone
from model.video.snippets import SnippetSpec, iter_snippet_batches
from model.video.source import open_source

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
    if args.json:
        payload = {
            "device": device,
            "frames_per_second": rates,
            "ratio_to_decode": {k: v / decode for k, v in rates.items()},
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
