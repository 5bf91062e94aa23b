"""ONNX Runtime as the runtime of the EfficientNet-Lite0 appearance network on CPUs (backbone runtime
`onnxruntime`, see `model.backbones.runtimes`).

Why: timm's `tf_efficientnet_lite0` pads every strided convolution TF-style ("same") at run time, which eager
PyTorch on a CPU pays for on every layer; ONNX Runtime runs the same graph with the padding folded into its
fused convolutions, several times faster on a CPU (`bench/extraction.py` measures both side by side).

What runs where: preprocessing (resize, [-1, 1] scaling), frame sampling and pooling stay the backbone's torch
code; only the feature network (`EfficientNetLite0Backbone.feature_network`, pixels `[N, 3, h, w]` -> the layer's
map `[N, C, h/32, w/32]`) runs in ONNX Runtime's CPU provider. TF "same" padding depends on the input size, so
the network is exported (TorchScript-based exporter, about 0.5 s) once per input size it meets, with a dynamic
batch axis, and the session kept for the `MAX_SIZES` most recently used sizes; a fixed camera meets one size.
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
import warnings
from collections import OrderedDict

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


def export_feature_network(
    network: FeatureNetwork, height: int, width: int, opset: int = DEFAULT_OPSET
) -> bytes:
    """The feature network as an ONNX model (bytes) for `[N, 3, height, width]` float32 pixels, N dynamic.

    Uses the TorchScript-based exporter: the dynamo exporter takes about 7 s per size on a 2-core CPU (and
    minutes with symbolic sizes) against 0.5 s. Raises whatever the exporter raises.
    """
    example = torch.zeros(EXAMPLE_BATCH, 3, height, width)
    buffer = io.BytesIO()
    with quiet_exporter(), warnings.catch_warnings(), torch.no_grad():
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


class OrtFeatureRunner:
    """Pixels `[N, 3, h, w]` float32 on the CPU -> the feature network's map `[N, C, h/32, w/32]` float32,
    computed by ONNX Runtime's CPU provider. Thread-safe: sessions are created under a lock, and ONNX Runtime's
    `run` may be called concurrently."""

    label = f"{RUNTIME_NAME} ({PROVIDER})"

    def __init__(
        self, network: FeatureNetwork, threads: int | None = None, max_sizes: int = MAX_SIZES
    ) -> None:
        if max_sizes < 1:
            raise ValueError(f"max_sizes must be >= 1, got {max_sizes}")
        self.network = network
        self.threads = threads if threads is not None else torch.get_num_threads()
        self.max_sizes = max_sizes
        self._sessions: OrderedDict[tuple[int, int], ort.InferenceSession] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """The input sizes (h, w) with a session, least recently used first."""
        with self._lock:
            return list(self._sessions)

    def _session(self, size: tuple[int, int]) -> ort.InferenceSession:
        with self._lock:
            session = self._sessions.get(size)
            if session is not None:
                self._sessions.move_to_end(size)
                return session
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            # Idle pool threads sleep instead of spinning: the service shares the cores with decoding and the
            # motion descriptor, which a spinning pool would starve.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(
                export_feature_network(self.network, *size), options, providers=[PROVIDER]
            )
            log.info("onnxruntime appearance network exported for %dx%d input", size[1], size[0])
            self._sessions[size] = session
            while len(self._sessions) > self.max_sizes:
                self._sessions.popitem(last=False)
            return session

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.device.type != "cpu" or pixels.dtype != torch.float32:
            raise ValueError(
                f"the {self.label} runner takes float32 CPU pixels, got {pixels.dtype} on {pixels.device}"
            )
        session = self._session((int(pixels.shape[-2]), int(pixels.shape[-1])))
        array = np.ascontiguousarray(pixels.numpy())
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])


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
    runner = OrtFeatureRunner(appearance.feature_network())
    accelerated = appearance.with_runner(runner, runner.label)
    if isinstance(backbone, TwoStreamBackbone):
        return backbone.with_appearance(accelerated)
    return accelerated


register_backbone_runtime(BackboneRuntime(RUNTIME_NAME, unavailable, accelerate))
