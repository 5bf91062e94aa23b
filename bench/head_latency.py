"""Head latency: eager vs TorchScript vs ONNX Runtime, the tensor-op shift vs a Python-loop shift, MoTAR size.

Run from the repository root::

    .venv/bin/python -m bench.head_latency                  # about a minute on a 2-core CPU
    .venv/bin/python -m bench.head_latency --device cuda    # the same table on a GPU, vs the paper's 0.856 ms

Shapes: one sliding window per call (B=1, T=32) at D=512 (the default head) and D=768 (CLIP ViT-L/14), and
the paper's efficiency shape [64, 32, 768]. Every backend is the real `exporters.backends` one, built from the
same randomly initialised checkpoint (speed does not depend on the weights). Backends are timed round-robin in
one process, `--rounds` rounds, each round `iters` calls per backend; the median round is reported, and ratios
are time / eager time (below 1 = faster than eager). On a busy machine pass `--threads 1`: multi-threaded
kernels stall at their barriers when other processes take the cores, which swamps the differences measured.

The shift rows compare `model.shift.adaptive_temporal_shift` with the naive form of the authors' prototype: a
Python loop over batch and time that reads each s_t with .item() and copies channel slices.

MoTAR FLOPs are counted with torch.utils.flop_counter.FlopCounterMode (1 multiply-add = 2 FLOPs) and broken
down by formula, against the paper's 11.03 M parameters and 242 M FLOPs.
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

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from exporters.backends import CUDA_GRAPH, HEAD_KINDS, HeadBackend, capture_cuda_graph, load_head_backend
from model.backbones.identity import BackboneIdentity
from model.checkpoint import save_checkpoint
from model.config import RefineVADConfig
from model.motar import MoTAR
from model.refinevad import RefineVAD, count_parameters
from model.shift import adaptive_temporal_shift, shift_sizes
from model.shift_triton import fused_adaptive_temporal_shift, fused_shift_available

log = logging.getLogger("bench.head_latency")

PAPER_MOTAR_PARAMS = 11.03e6
PAPER_MOTAR_FLOPS = 242e6
PAPER_MOTAR_MS = 0.856  # RTX A5000, [64, 32, 768]

# (label, batch, snippets, feature dim, calls per round on the CPU)
SHAPES: list[tuple[str, int, int, int, int]] = [
    ("window D=512", 1, 32, 512, 10),
    ("window D=768", 1, 32, 768, 10),
    ("batch [64,32,768]", 64, 32, 768, 1),
]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_round_robin(
    fns: dict[str, Callable[[], object]], device: torch.device, rounds: int, iters: int
) -> dict[str, float]:
    """Median over rounds of the mean ms per call, the functions interleaved so drift hits all alike."""
    for fn in fns.values():  # warm-up: allocator, ORT arena, TorchScript profiling runs
        for _ in range(min(iters, 3)):
            fn()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / iters * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def loop_shift(x: Tensor, shift: Tensor) -> Tensor:
    """The naive shift: Python loops over batch and time, one host read of s_t per snippet."""
    batch, snippets, _ = x.shape
    y = x.clone()
    for b in range(batch):
        for t in range(snippets):
            s = int(shift[b, t].item())
            y[b, t, :s] = x[b, t - 1, :s] if t > 0 else 0.0
            y[b, t, s : 2 * s] = x[b, t + 1, s : 2 * s] if t + 1 < snippets else 0.0
    return y


def backends_for(
    dim: int, workdir: Path, device: torch.device, threads: int | None
) -> dict[str, HeadBackend]:
    torch.manual_seed(0)
    config = RefineVADConfig(feature_dim=dim)
    identity = BackboneIdentity(name="bench", architecture="random", weights="random", dim=dim)
    checkpoint = save_checkpoint(workdir / f"head-{dim}.pt", RefineVAD(config), identity, {"trained": False})
    # On a GPU, also the eager head replayed as CUDA graphs (the launch cost of its small kernels removed).
    kinds = [*HEAD_KINDS, CUDA_GRAPH] if device.type == "cuda" else list(HEAD_KINDS)
    return {
        kind: load_head_backend(
            kind, checkpoint, device, cache_dir=workdir / "cache", max_snippets=256, ort_threads=threads
        )
        for kind in kinds
    }


def head_table(
    device: torch.device,
    rounds: int,
    iter_scale: float,
    threads: int | None,
    shapes: list[tuple[str, int, int, int, int]] = SHAPES,
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        dims = sorted({shape[3] for shape in shapes})
        backends = {dim: backends_for(dim, Path(tmp), device, threads) for dim in dims}
        for label, batch, snippets, dim, iters in shapes:
            x = torch.randn(batch, snippets, dim, device=device)
            fns = {kind: (lambda b=backend, x=x: b(x)) for kind, backend in backends[dim].items()}
            ms = time_round_robin(fns, device, rounds, max(1, round(iters * iter_scale)))
            for kind in backends[dim]:
                rows.append(
                    {"shape": label, "backend": kind, "ms": ms[kind], "vs_eager": ms[kind] / ms["torch"]}
                )
    return rows


def shift_table(device: torch.device, rounds: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for label, batch, snippets, dim, _ in (SHAPES[0], SHAPES[2]):
        x = torch.randn(batch, snippets, dim, device=device)
        shift = shift_sizes(torch.rand(batch, snippets, device=device), dim, 8)
        if not torch.equal(loop_shift(x, shift), adaptive_temporal_shift(x, shift)):
            raise AssertionError("the loop shift and the tensor-op shift disagree")
        fns = {
            "tensor ops": lambda x=x, shift=shift: adaptive_temporal_shift(x, shift),
            "python loop": lambda x=x, shift=shift: loop_shift(x, shift),
        }
        # The Triton kernel only on a real GPU (interpreter timings mean nothing).
        fused = device.type == "cuda" and fused_shift_available(x)
        if fused:
            if not torch.equal(fused_adaptive_temporal_shift(x, shift), adaptive_temporal_shift(x, shift)):
                raise AssertionError("the fused shift and the tensor-op shift disagree")
            fns["fused"] = lambda x=x, shift=shift: fused_adaptive_temporal_shift(x, shift)
        ms = time_round_robin(fns, device, rounds, iters=2 if batch > 1 else 10)
        row: dict[str, object] = {
            "shape": label,
            "tensor_ms": ms["tensor ops"],
            "loop_ms": ms["python loop"],
            "loop_vs_tensor": ms["python loop"] / ms["tensor ops"],
        }
        if fused:
            row["fused_ms"] = ms["fused"]
        rows.append(row)
    return rows


def motar_cost(device: torch.device, rounds: int) -> dict[str, object]:
    dim, snippets, ff, layers = 768, 32, 2048, 2
    motar = MoTAR(RefineVADConfig(feature_dim=dim)).to(device).eval()
    params = count_parameters(motar)
    result: dict[str, object] = {"params": params, "paper_params": PAPER_MOTAR_PARAMS}
    for batch in (1, 64):
        x = torch.randn(batch, snippets, dim, device=device)
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            motar(x)
        tokens = batch * snippets
        # Multiply-adds by part, per the layer shapes (see model/motar.py and model/attention.py).
        macs = {
            "shift_predictor": tokens * (dim * 32 + 32 * 16 + 16),
            "qkv_projection": layers * tokens * 3 * dim * dim,
            "attention_matmuls": layers * 2 * batch * snippets * snippets * dim,
            "out_projection": layers * tokens * dim * dim,
            "feed_forward": layers * tokens * 2 * dim * ff,
        }
        result[f"B={batch}"] = {
            "flops_counted": counter.get_total_flops(),
            "macs_by_formula": sum(macs.values()),
            "macs_breakdown": macs,
        }
    with torch.inference_mode():
        x = torch.randn(64, snippets, dim, device=device)
        iters = 20 if device.type == "cuda" else 1
        result["ms_64x32x768"] = time_round_robin({"motar": lambda: motar(x)}, device, rounds, iters)["motar"]
        if device.type == "cuda":
            replay = _captured(motar, x)
            result["ms_64x32x768_cuda_graph"] = time_round_robin({"graph": replay}, device, rounds, iters)[
                "graph"
            ]
    return result


def ensemble_table(device: torch.device, rounds: int, iter_scale: float) -> list[dict[str, object]]:
    """The shipped default (a seed ensemble) against one of its members, eager, on live-window shapes: what
    averaging five heads costs per scheduler cycle (one window per stream, T = 32)."""
    from model.checkpoint import load_checkpoint
    from model.ensemble import RefineVADEnsemble
    from model.inference import DEFAULT_CHECKPOINT

    loaded = load_checkpoint(DEFAULT_CHECKPOINT, map_location=device)
    if not isinstance(loaded.model, RefineVADEnsemble):
        return []
    ensemble, member = loaded.model, loaded.model.members[0]
    rows = []
    for streams, iters in ((1, 40), (16, 10)):
        x = torch.randn(streams, 32, loaded.config.feature_dim, device=device)
        with torch.inference_mode():
            ms = time_round_robin(
                {"member": lambda x=x: member(x), "ensemble": lambda x=x: ensemble(x)},
                device,
                rounds,
                max(1, round(iters * iter_scale)),
            )
        rows.append(
            {
                "shape": f"[{streams},32,{loaded.config.feature_dim}]",
                "members": len(ensemble.members),
                "member_ms": ms["member"],
                "ensemble_ms": ms["ensemble"],
                "ensemble_vs_member": ms["ensemble"] / ms["member"],
            }
        )
    return rows


def _captured(module: torch.nn.Module, x: Tensor) -> Callable[[], None]:
    """`module(x)` captured as a CUDA graph; returns its replay."""
    graph, _ = capture_cuda_graph(lambda: module(x), x.device)
    return graph.replay


def print_report(
    device: torch.device, heads: list, shifts: list, motar: dict, ensemble: list | None = None
) -> None:
    print(f"\nHead latency on {device_name(device)} (torch threads {torch.get_num_threads()}), ms per call")
    print(f"{'shape':<20}{'backend':<13}{'ms':>10}{'x eager time':>15}")
    for row in heads:
        print(f"{row['shape']:<20}{row['backend']:<13}{row['ms']:>10.3f}{row['vs_eager']:>15.2f}")
    print("\nAdaptive shift: tensor ops vs Python loop with .item()")
    for row in shifts:
        print(
            f"{row['shape']:<20}tensor {row['tensor_ms']:.3f} ms   loop {row['loop_ms']:.2f} ms   "
            f"loop is {row['loop_vs_tensor']:.0f}x slower"
            + (f"   fused Triton {row['fused_ms']:.3f} ms" if "fused_ms" in row else "")
        )
    print(
        f"\nMoTAR (D=768): {motar['params'] / 1e6:.2f} M parameters (paper {PAPER_MOTAR_PARAMS / 1e6:.2f} M)"
    )
    for batch in (1, 64):
        cost = motar[f"B={batch}"]
        print(
            f"  [{batch},32,768]: {cost['flops_counted'] / 1e6:,.0f} M FLOPs counted "
            f"= {cost['flops_counted'] / 2e6:,.0f} M multiply-adds; by formula {cost['macs_by_formula'] / 1e6:,.0f} M "
            "(the counter does not see the CPU attention kernel's matmuls)"
        )
    parts = motar["B=1"]["macs_breakdown"]
    without_qkv = sum(v for k, v in parts.items() if k != "qkv_projection")
    print(
        f"  paper: {PAPER_MOTAR_FLOPS / 1e6:.0f} M FLOPs at [64,32,768]; that is a per-video (B=1) figure, "
        f"not per batch.\n  At B=1 the multiply-adds are "
        + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in parts.items())
        + f";\n  all but the q/k/v projection sum to {without_qkv / 1e6:.1f} M."
    )
    print(
        f"  MoTAR eager at [64,32,768]: {motar['ms_64x32x768']:.2f} ms (paper {PAPER_MOTAR_MS} ms, RTX A5000)"
    )
    if "ms_64x32x768_cuda_graph" in motar:
        print(f"  MoTAR as a CUDA-graph replay: {motar['ms_64x32x768_cuda_graph']:.3f} ms")
    for row in ensemble or []:
        print(
            f"\nShipped seed ensemble ({row['members']} heads) {row['shape']}: {row['ensemble_ms']:.2f} ms against "
            f"{row['member_ms']:.2f} ms for one member ({row['ensemble_vs_member']:.1f}x)"
        )


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU"


def run(
    device: torch.device,
    rounds: int = 3,
    threads: int | None = None,
    iter_scale: float | None = None,
    shapes: list[str] | None = None,
) -> dict[str, object]:
    """The whole measurement as one dict: backend latencies, shift timings, MoTAR size and cost.

    `shapes` picks rows of SHAPES by label (default: all)."""
    if threads:
        torch.set_num_threads(threads)
    # GPU calls are ~100x cheaper: more of them per round for stable medians.
    if iter_scale is None:
        iter_scale = 10.0 if device.type == "cuda" else 1.0
    picked = [shape for shape in SHAPES if shapes is None or shape[0] in shapes]
    heads = head_table(device, rounds, iter_scale, threads, picked)
    for row in heads:
        batch = next(b for label, b, *_ in SHAPES if label == row["shape"])
        row["windows_per_s"] = batch / row["ms"] * 1e3
    return {
        "device": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "heads": heads,
        "shift": shift_table(device, rounds),
        "motar": motar_cost(device, rounds),
        "ensemble": ensemble_table(device, rounds, iter_scale),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, help="CPU threads for torch and ONNX Runtime (default: theirs)"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    report = run(device, args.rounds, args.threads)
    print_report(device, report["heads"], report["shift"], report["motar"], report["ensemble"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
