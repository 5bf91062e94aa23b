"""Inference backends of the RefineVAD head: eager torch, TorchScript and ONNX Runtime behind one interface.

    backend = load_head_backend("onnx", "model.pt", "cuda")
    out = backend(features)  # features [B, T, D] -> {"scores": [B, T], "category_probs": [B, C], ...}

Every backend takes and returns torch tensors on its device. Given a checkpoint (.pt) and kind torchscript or
onnx, the head is exported once into a cache keyed by the checkpoint's SHA-256 and the export settings; given an
exported file (.ts / .onnx), that file is loaded with the metadata embedded in it.

Besides the built-in kinds (`HEAD_KINDS`), `onnx-tensorrt` runs the ONNX export on ONNX Runtime's TensorRT
provider, `cuda-graph` replays the eager head as captured CUDA graphs (one per batch bucket), and a plugin can add its own kind with `register_head_backend`. Every backend but `torch` is an
accelerated path: the engine checks it against the eager head at start-up (`model.acceleration`).
"""

from __future__ import annotations

import logging
import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor

import exporters.appearance_onnx  # noqa: F401  (registers the ONNX Runtime backbone runtime)
from exporters.head import InferenceHead
from exporters.metadata import (
    DEFAULT_MAX_SNIPPETS,
    DEFAULT_OPSET,
    INPUT_NAME,
    OUTPUT_NAMES,
    ExportMetadata,
    HeadKind,
)
from exporters.onnx import export_onnx, read_onnx_metadata
from exporters.torchscript import export_torchscript, load_torchscript
from model.checkpoint import LoadedCheckpoint, file_sha256, load_checkpoint
from model.inference import set_head_backend_loader

log = logging.getLogger(__name__)

HEAD_KINDS: tuple[HeadKind, ...] = ("torch", "torchscript", "onnx")
# File suffix of each exported format; anything else is read as a checkpoint.
EXPORT_SUFFIXES: dict[str, HeadKind] = {".ts": "torchscript", ".onnx": "onnx"}
TENSORRT = "onnx-tensorrt"
CUDA_GRAPH = "cuda-graph"
_Out = TypeVar("_Out")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "refinevad" / "exports"


class HeadBackend(ABC):
    """A loaded head: call it with features [B, T, D] float32 on `device`."""

    kind: HeadKind

    def __init__(self, metadata: ExportMetadata, device: torch.device) -> None:
        self.metadata = metadata
        self.device = device

    @property
    def label(self) -> str:
        """What runs the head, for reports (e.g. `onnx (CUDAExecutionProvider)`)."""
        return str(self.kind)

    @property
    def feature_dim(self) -> int:
        return self.metadata.feature_dim

    @property
    def category_names(self) -> list[str]:
        return self.metadata.category_names

    @property
    def max_snippets(self) -> int:
        return self.metadata.max_snippets

    def check_input(self, x: Tensor) -> Tensor:
        if x.dim() != 3:
            raise ValueError(f"features must be [B, T, D], got shape {tuple(x.shape)}")
        b, t, d = x.shape
        if d != self.feature_dim:
            raise ValueError(f"features have dim {d} but the head expects {self.feature_dim}")
        if b < 1 or not 1 <= t <= self.max_snippets:
            raise ValueError(f"need B >= 1 and 1 <= T <= {self.max_snippets}, got B={b}, T={t}")
        if not x.is_floating_point():
            raise ValueError(f"features must be floating point, got {x.dtype}")
        return x.to(self.device, torch.float32).contiguous()

    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        return self.run(self.check_input(x))

    @abstractmethod
    def run(self, x: Tensor) -> dict[str, Tensor]:
        """x: validated contiguous float32 [B, T, D] on self.device."""


class TorchHeadBackend(HeadBackend):
    kind: HeadKind = "torch"

    def __init__(self, head: InferenceHead, metadata: ExportMetadata, device: torch.device) -> None:
        super().__init__(metadata, device)
        self.head = head.to(device).eval()

    def run(self, x: Tensor) -> dict[str, Tensor]:
        with torch.inference_mode():
            return dict(zip(OUTPUT_NAMES, self.head(x), strict=True))


class TorchScriptHeadBackend(HeadBackend):
    kind: HeadKind = "torchscript"

    def __init__(self, path: str | os.PathLike[str], device: torch.device) -> None:
        module, metadata = load_torchscript(path, device)
        super().__init__(metadata, device)
        self.module = module
        self.path = Path(path)

    def run(self, x: Tensor) -> dict[str, Tensor]:
        with torch.inference_mode():
            return dict(zip(self.metadata.output_names, self.module(x), strict=True))


def capture_cuda_graph(
    fn: Callable[[], _Out], device: torch.device, pool: tuple[int, int] | None = None
) -> tuple[torch.cuda.CUDAGraph, _Out]:
    """`fn()` captured as a CUDA graph on `device`, after three warm-up calls on a side stream as PyTorch's
    CUDA-graph notes require; returns the graph and `fn`'s outputs, which every `graph.replay()` overwrites."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph, pool=pool):
        out = fn()
    return graph, out


def batch_bucket(batch: int) -> int:
    """The captured batch size that serves `batch` rows: the next power of two (1, 2, 4, ... ), so a live
    scheduler whose stream count changes every few seconds reuses a handful of graphs."""
    return 1 << max(0, batch - 1).bit_length()


class CudaGraphHeadBackend(HeadBackend):
    """The eager head captured into CUDA graphs and replayed: the same kernels without the CPU's launch cost,
    which dominates a head this small on a GPU (dozens of kernels of a few microseconds each).

    A graph is captured per (batch bucket, T) on first use (a few warm-up calls on a side stream first, as
    PyTorch's CUDA-graph notes require); rows are zero-padded up to the bucket and the padding's outputs
    dropped, which is exact because the head treats every video of a batch independently at inference. The
    least recently used graphs beyond `max_graphs` are released. Raises RuntimeError off CUDA.
    """

    kind = CUDA_GRAPH  # type: ignore[assignment]

    def __init__(
        self, head: InferenceHead, metadata: ExportMetadata, device: torch.device, max_graphs: int = 12
    ) -> None:
        if device.type != "cuda" or not torch.cuda.is_available():
            raise RuntimeError(f"CUDA graphs need a CUDA device, not {device}")
        super().__init__(metadata, device)
        self.head = head.to(device).eval()
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple[int, int], tuple[Tensor, torch.cuda.CUDAGraph, tuple[Tensor, ...]]]
        self._graphs = OrderedDict()
        self._pool = torch.cuda.graph_pool_handle()
        self._lock = (
            threading.Lock()
        )  # one replay at a time: the graph's input and outputs are shared buffers

    def _capture(self, rows: int, snippets: int) -> tuple[Tensor, torch.cuda.CUDAGraph, tuple[Tensor, ...]]:
        static_in = torch.zeros(rows, snippets, self.feature_dim, device=self.device)
        graph, static_out = capture_cuda_graph(lambda: self.head(static_in), self.device, self._pool)
        return static_in, graph, static_out

    def run(self, x: Tensor) -> dict[str, Tensor]:
        batch, snippets, _ = x.shape
        key = (batch_bucket(batch), snippets)
        with self._lock:
            captured = self._graphs.get(key)
            if captured is None:
                captured = self._capture(*key)
                self._graphs[key] = captured
                while len(self._graphs) > self.max_graphs:
                    self._graphs.popitem(last=False)
            else:
                self._graphs.move_to_end(key)
            static_in, graph, static_out = captured
            static_in[:batch].copy_(x)
            static_in[batch:].zero_()
            graph.replay()
            return {name: out[:batch].clone() for name, out in zip(OUTPUT_NAMES, static_out, strict=True)}


def require_tensorrt(device: torch.device) -> None:
    """RuntimeError unless ONNX Runtime's TensorRT provider can run on `device`."""
    available = ort.get_available_providers()
    if device.type != "cuda" or "TensorrtExecutionProvider" not in available:
        raise RuntimeError(
            f"ONNX Runtime's TensorRT execution provider cannot run on {device} here "
            f"(available providers: {', '.join(available)})"
        )


class OnnxHeadBackend(HeadBackend):
    """ONNX Runtime with IOBinding: inputs and outputs are bound to torch buffers, so nothing is copied through
    numpy and, with the CUDA execution provider, nothing leaves the GPU."""

    kind: HeadKind = "onnx"

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: torch.device,
        intra_op_threads: int | None = None,
        *,
        tensorrt: bool = False,
    ) -> None:
        super().__init__(read_onnx_metadata(path), device)
        self.path = Path(path)
        providers: list[str | tuple[str, dict[str, str]]] = ["CPUExecutionProvider"]
        available = ort.get_available_providers()
        if tensorrt:
            require_tensorrt(device)
        if device.type == "cuda":
            index = str(device.index if device.index is not None else torch.cuda.current_device())
            if "CUDAExecutionProvider" in available:
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
            else:
                log.warning("ONNX Runtime has no CUDA execution provider; the head runs on the CPU")
            if tensorrt:
                providers.insert(0, ("TensorrtExecutionProvider", {"device_id": index}))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.provider = self.session.get_providers()[0]
        if tensorrt and self.provider != "TensorrtExecutionProvider":
            raise RuntimeError(f"ONNX Runtime did not load the TensorRT provider (it chose {self.provider})")
        on_cuda = self.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        # Where ORT reads and writes: the requested GPU when its provider loaded, else host memory.
        self.run_device = device if on_cuda else torch.device("cpu")
        if on_cuda and self.run_device.index is None:
            self.run_device = torch.device("cuda", torch.cuda.current_device())

    @property
    def label(self) -> str:
        return f"{self.kind} ({self.provider})"

    def _bind_args(self, tensor: Tensor) -> tuple[str, int, type, tuple[int, ...], int]:
        device_type = "cuda" if tensor.device.type == "cuda" else "cpu"
        return device_type, tensor.device.index or 0, np.float32, tuple(tensor.shape), tensor.data_ptr()

    def run(self, x: Tensor) -> dict[str, Tensor]:
        x = x.to(self.run_device)
        b, t = x.shape[0], x.shape[1]
        c = len(self.metadata.category_names)
        shapes = {"scores": (b, t), "logits": (b, t), "category_probs": (b, c), "category_weights": (b, c)}
        outputs = {
            name: torch.empty(shapes[name], dtype=torch.float32, device=self.run_device)
            for name in self.metadata.output_names
        }
        binding = self.session.io_binding()
        binding.bind_input(INPUT_NAME, *self._bind_args(x))
        for name, tensor in outputs.items():
            binding.bind_output(name, *self._bind_args(tensor))
        if self.run_device.type == "cuda":
            # ORT runs on its own stream: the input written on torch's stream must be complete first.
            torch.cuda.current_stream(self.run_device).synchronize()
        self.session.run_with_iobinding(binding)
        return {name: tensor.to(self.device) for name, tensor in outputs.items()}


def torch_metadata(checkpoint: LoadedCheckpoint, max_snippets: int) -> ExportMetadata:
    return ExportMetadata.from_checkpoint(checkpoint, "torch", "eager", max_snippets)


def cached_export_path(cache_dir: Path, sha256: str, kind: HeadKind, opset: int, max_snippets: int) -> Path:
    suffix = {"torchscript": ".ts", "onnx": ".onnx"}[kind]
    settings = f"T{max_snippets}" + (f"-opset{opset}" if kind == "onnx" else "")
    return cache_dir / f"{sha256[:16]}-{settings}-torch{torch.__version__.split('+')[0]}{suffix}"


HeadFactory = Callable[..., HeadBackend]
"""`factory(path, device, *, cache_dir, opset, max_snippets, ort_threads) -> HeadBackend`, arguments as
`load_head_backend` takes them (`device` a torch.device, `path` a Path)."""
_REGISTERED: dict[str, HeadFactory] = {}


def register_head_backend(kind: str, factory: HeadFactory) -> None:
    """Make `kind` loadable by `load_head_backend` (and selectable as the service's `head_backend`)."""
    if kind in HEAD_KINDS:
        raise ValueError(f"{kind!r} is a built-in head backend and cannot be replaced")
    _REGISTERED[kind] = factory


def head_backend_kinds() -> list[str]:
    """Every loadable kind: the built-in ones, then the registered ones."""
    return [*HEAD_KINDS, *_REGISTERED]


def load_head_backend(
    kind: str,
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    opset: int = DEFAULT_OPSET,
    max_snippets: int = DEFAULT_MAX_SNIPPETS,
    ort_threads: int | None = None,
) -> HeadBackend:
    """The head at `path` (checkpoint or exported file) on `device`, run by backend `kind`.

    `ort_threads` sets ONNX Runtime's intra-op CPU threads (default: one per physical core). Raises ValueError
    for an unknown kind or an export of another kind.
    """
    device = torch.device(device)
    path = Path(path)
    factory = _REGISTERED.get(kind)
    if factory is not None:
        return factory(
            path, device, cache_dir=cache_dir, opset=opset, max_snippets=max_snippets, ort_threads=ort_threads
        )
    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head backend {kind!r}; choose one of {', '.join(head_backend_kinds())}")
    if kind == "torch" and path.suffix not in EXPORT_SUFFIXES:
        checkpoint = load_checkpoint(path, map_location=device)
        return TorchHeadBackend(
            InferenceHead(checkpoint.model), torch_metadata(checkpoint, max_snippets), device
        )
    target = exported_file(kind, path, cache_dir, opset, max_snippets)
    if kind == "onnx":
        return OnnxHeadBackend(target, device, ort_threads)
    return TorchScriptHeadBackend(target, device)


def exported_file(
    kind: HeadKind, path: Path, cache_dir: str | os.PathLike[str] | None, opset: int, max_snippets: int
) -> Path:
    """`path` itself if it is an export of `kind`; for a checkpoint, its cached export (made on first use)."""
    exported_kind = EXPORT_SUFFIXES.get(path.suffix)
    if exported_kind is not None:
        if exported_kind != kind:
            raise ValueError(f"{path} is a {exported_kind} export; it cannot run on the {kind} backend")
        return path
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cached_export_path(cache, file_sha256(path), kind, opset, max_snippets)
    if not target.is_file():
        log.info("exporting %s to %s (cached for later runs)", path, target)
        checkpoint = load_checkpoint(path)
        if kind == "onnx":
            export_onnx(checkpoint, target, opset=opset, max_snippets=max_snippets)
        else:
            export_torchscript(checkpoint, target, max_snippets=max_snippets)
    return target


def _load_tensorrt(
    path: Path,
    device: torch.device,
    *,
    cache_dir: str | os.PathLike[str] | None,
    opset: int,
    max_snippets: int,
    ort_threads: int | None,
) -> HeadBackend:
    require_tensorrt(device)  # before spending seconds on an export nothing could run
    return OnnxHeadBackend(
        exported_file("onnx", path, cache_dir, opset, max_snippets), device, ort_threads, tensorrt=True
    )


def _load_cuda_graph(
    path: Path,
    device: torch.device,
    *,
    cache_dir: str | os.PathLike[str] | None,
    opset: int,
    max_snippets: int,
    ort_threads: int | None,
) -> HeadBackend:
    if path.suffix in EXPORT_SUFFIXES:
        raise ValueError(
            f"{path} is an export; the {CUDA_GRAPH} backend captures the eager head of a checkpoint"
        )
    if device.type != "cuda":
        raise RuntimeError(f"CUDA graphs need a CUDA device, not {device}")
    checkpoint = load_checkpoint(path, map_location=device)
    return CudaGraphHeadBackend(
        InferenceHead(checkpoint.model), torch_metadata(checkpoint, max_snippets), device
    )


register_head_backend(TENSORRT, _load_tensorrt)
register_head_backend(CUDA_GRAPH, _load_cuda_graph)

set_head_backend_loader(load_head_backend)
