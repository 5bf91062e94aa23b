"""ONNX Runtime as the runtime of the EfficientNet-Lite0 appearance network on CPUs (backbone runtime
`onnxruntime`, see `model.backbones.runtimes`).

Why: timm's `tf_efficientnet_lite0` pads every strided convolution TF-style ("same") at run time, which eager
PyTorch on a CPU pays for on every layer; ONNX Runtime runs the same graph with the padding folded into its
fused convolutions, several times faster on a CPU (`bench/extraction.py` measures both side by side).

What runs where: preprocessing (resize, [-1, 1] scaling), frame sampling and pooling stay the backbone's torch
code; only the feature network (`EfficientNetLite0Backbone.feature_network`, pixels `[N, 3, h, w]` -> the layer's
map `[N, C, h/32, w/32]`) runs in ONNX Runtime's CPU provider. TF "same" padding depends on the input size, so
the network is exported (TorchScript-based exporter, about 0.5 s) once per input size it meets, with a dynamic
batch axis, checked on that size's first frames against the eager network (a size that fails is computed by
eager PyTorch), and kept for the `MAX_SIZES` most recently used sizes; a fixed camera meets one size.
Session threads follow torch's CPU thread count when the runtime is built (the service's `torch_threads`); each
session keeps its own pool of that many threads less one (the caller's), created with the session, so a service
that has met k frame sizes holds k (at most `MAX_SIZES`) such pools.

The engine serves it only after its features matched the eager network's on the device at start-up
(`model.acceleration.check_backbone`); on CUDA the torch path (fp16) serves and this runtime says it is
unavailable.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import torch

from exporters.metadata import DEFAULT_OPSET
from exporters.onnx import quiet_exporter
from model.backbones.base import Backbone
from model.backbones.efficientnet import EfficientNetLite0Backbone, FeatureNetwork
from model.backbones.runtimes import BackboneRuntime, register_backbone_runtime
from model.backbones.two_stream import TwoStreamBackbone

log = logging.getLogger(__name__)

RUNTIME_NAME = "onnxruntime"
PROVIDER = "CPUExecutionProvider"
INPUT_NAME, OUTPUT_NAME = "pixels", "feature_map"
MAX_SIZES = 8
EXAMPLE_BATCH = 2
_EXPORT_LOCK = threading.Lock()


def export_feature_network(
    network: FeatureNetwork, height: int, width: int, opset: int = DEFAULT_OPSET
) -> bytes:
    """The feature network as an ONNX model (bytes) for `[N, 3, height, width]` float32 pixels, N dynamic.

    Uses the TorchScript-based exporter: the dynamo exporter takes about 7 s per size on a 2-core CPU (and
    minutes with symbolic sizes) against 0.5 s. One export at a time in the process. Raises whatever the
    exporter raises.
    """
    example = torch.zeros(EXAMPLE_BATCH, 3, height, width)
    buffer = io.BytesIO()
    # torch.onnx.export keeps global state: two exports at once (two new sizes met by two threads) break it.
    with _EXPORT_LOCK, quiet_exporter(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(
            network,
            (example,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "frames"}, OUTPUT_NAME: {0: "frames"}},
            opset_version=opset,
            dynamo=False,
        )
    return buffer.getvalue()


# Largest relative L2 difference (per frame, over the whole map) between the session's map and eager PyTorch's on
# the first frames of a new size; ONNX Runtime measured about 1e-6 here, so this only catches a wrong graph.
SIZE_CHECK_RTOL = 1e-3
SIZE_CHECK_FRAMES = 2
EAGER = "eager"  # a size whose session failed its check: eager PyTorch computes it


class OrtFeatureRunner:
    """Pixels `[N, 3, h, w]` float32 on the CPU -> the feature network's map `[N, C, h/32, w/32]` float32,
    computed by ONNX Runtime's CPU provider.

    Every input size gets its own exported session, checked on its first frames against the eager network
    (relative L2 within `SIZE_CHECK_RTOL`); a size whose export, session or check fails is computed by eager
    PyTorch from then on, with a warning (the start-up check only covers the check input's size). Thread-safe:
    a size is built under its own lock, so callers of sizes already built never wait for a new one, and ONNX
    Runtime's `run` may be called concurrently. `export` makes the ONNX bytes for (network, h, w).
    """

    label = f"{RUNTIME_NAME} ({PROVIDER})"

    def __init__(
        self,
        network: FeatureNetwork,
        threads: int | None = None,
        max_sizes: int = MAX_SIZES,
        export: Callable[[FeatureNetwork, int, int], bytes] = export_feature_network,
    ) -> None:
        if max_sizes < 1:
            raise ValueError(f"max_sizes must be >= 1, got {max_sizes}")
        self.network = network
        self.threads = threads if threads is not None else torch.get_num_threads()
        self.max_sizes = max_sizes
        self._export = export
        self._paths: OrderedDict[tuple[int, int], ort.InferenceSession | str] = OrderedDict()
        self._building: dict[tuple[int, int], threading.Lock] = {}
        self._lock = threading.Lock()

    @property
    def sizes(self) -> dict[tuple[int, int], str]:
        """Each input size (h, w) met, least recently used first, and what computes it (`onnxruntime` or
        `eager` after a failed check)."""
        with self._lock:
            return {
                size: path if isinstance(path, str) else RUNTIME_NAME for size, path in self._paths.items()
            }

    def _cached(self, size: tuple[int, int]) -> ort.InferenceSession | str | None:
        with self._lock:
            path = self._paths.get(size)
            if path is not None:
                self._paths.move_to_end(size)
            return path

    def _path(self, size: tuple[int, int], pixels: torch.Tensor) -> ort.InferenceSession | str:
        path = self._cached(size)
        if path is not None:
            return path
        with self._lock:
            building = self._building.setdefault(size, threading.Lock())
        with building:
            path = self._cached(size)
            if path is None:
                path = self._build(size, pixels[:SIZE_CHECK_FRAMES])
                with self._lock:
                    self._paths[size] = path
                    self._building.pop(size, None)
                    while len(self._paths) > self.max_sizes:
                        self._paths.popitem(last=False)
            return path

    def _build(self, size: tuple[int, int], sample: torch.Tensor) -> ort.InferenceSession | str:
        """A checked session for `size`, or `EAGER` when exporting, loading or the check fails."""
        started = time.perf_counter()
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            # Idle pool threads sleep instead of spinning: the service shares the cores with decoding and the
            # motion descriptor, which a spinning pool would starve.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(self._export(self.network, *size), options, providers=[PROVIDER])
            got = torch.from_numpy(self._run(session, sample)).flatten(1)
            with torch.inference_mode():
                want = self.network(sample).flatten(1)
            if got.shape != want.shape:
                raise ValueError(f"map shape {list(got.shape)}, eager {list(want.shape)}")
            error = float(((got - want).norm(dim=1) / want.norm(dim=1).clamp_min(1e-12)).max())
            if not error <= SIZE_CHECK_RTOL:
                raise ValueError(f"relative L2 difference {error:.3g} beyond {SIZE_CHECK_RTOL:g}")
        except Exception as exc:
            log.warning(
                "onnxruntime appearance network for %dx%d input failed its check (%s: %s); eager PyTorch "
                "computes that size",
                size[1],
                size[0],
                type(exc).__name__,
                exc,
            )
            return EAGER
        log.info(
            "onnxruntime appearance network for %dx%d input exported and checked (relative L2 %.2g) in %.1fs",
            size[1],
            size[0],
            error,
            time.perf_counter() - started,
        )
        return session

    @staticmethod
    def _run(session: ort.InferenceSession, pixels: torch.Tensor) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(pixels.numpy())})[0]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.device.type != "cpu" or pixels.dtype != torch.float32:
            raise ValueError(
                f"the {self.label} runner takes float32 CPU pixels, got {pixels.dtype} on {pixels.device}"
            )
        path = self._path((int(pixels.shape[-2]), int(pixels.shape[-1])), pixels)
        if isinstance(path, str):
            with torch.inference_mode():
                return self.network(pixels)
        return torch.from_numpy(self._run(path, pixels))


def _appearance(backbone: Backbone) -> EfficientNetLite0Backbone | None:
    if isinstance(backbone, EfficientNetLite0Backbone):
        return backbone
    if isinstance(backbone, TwoStreamBackbone):
        return backbone.appearance
    return None


def unavailable(backbone: Backbone) -> str | None:
    """Why this runtime cannot run `backbone` (None when it can)."""
    appearance = _appearance(backbone)
    if appearance is None:
        return f"it runs the EfficientNet-Lite0 appearance network; the {backbone.identity.name} backbone has none"
    if appearance.device.type != "cpu":
        return f"it runs on CPUs; on {appearance.device} the torch path serves"
    if appearance.dtype != torch.float32:
        return f"it replaces the fp32 network, not the {appearance.precision} one"
    if PROVIDER not in ort.get_available_providers():
        return f"this ONNX Runtime build has no {PROVIDER}"
    return None


def accelerate(backbone: Backbone) -> Backbone:
    """`backbone` (EfficientNet-Lite0 or two-stream, fp32 on the CPU) with its appearance network run by ONNX
    Runtime. The exports happen on first use of each input size. Raises ValueError for other backbones."""
    why_not = unavailable(backbone)
    if why_not is not None:
        raise ValueError(f"{RUNTIME_NAME} cannot run this backbone: {why_not}")
    appearance = _appearance(backbone)
    assert appearance is not None
    accelerated = appearance.with_runner(OrtFeatureRunner(appearance.feature_network()))
    if isinstance(backbone, TwoStreamBackbone):
        return backbone.with_appearance(accelerated)
    return accelerated


register_backbone_runtime(BackboneRuntime(RUNTIME_NAME, unavailable, accelerate))
