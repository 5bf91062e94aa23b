"""ONNX export of the RefineVAD head.

Uses torch 2.14's default exporter (`dynamo=True`, via torch.export): the batch and time axes are declared as
symbolic dims with bounds (T from 1 to `max_snippets`), and torch.export proves the graph valid for the whole
range instead of replaying one traced shape. The legacy TorchScript-based exporter also gives matching outputs
here, but it records Python int arithmetic on shapes (top-k pooling's k = T // 16 + 1) by tracing one example,
with only a warning when that turns into a constant; the dynamo exporter fails loudly instead. Its cost is the
export time (about 5 s for the default head on 2 CPU cores vs under 1 s), paid once per checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import onnx
import torch

from exporters.head import InferenceHead
from exporters.metadata import (
    DEFAULT_MAX_SNIPPETS,
    DEFAULT_OPSET,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAMES,
    ExportMetadata,
    write_sidecar,
)
from model.checkpoint import LoadedCheckpoint

log = logging.getLogger(__name__)

EXPORTER = "torch.onnx.export(dynamo=True)"
# The dynamo exporter's operator library (onnxscript torchlib) emits opset 18 or newer.
MIN_OPSET = 18
# Control-flow operators: the head's graph must have none (no loop over time, no data-dependent branch).
CONTROL_FLOW_OPS = frozenset({"Loop", "If", "Scan"})
# Shape of the example input; T is the training length so nothing is specialised to 0 or 1.
EXAMPLE_BATCH = 2


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporter's optimiser logs every skipped constant fold at INFO/WARNING; keep only errors."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # Deprecation notices from onnxscript internals; they do not affect the graph.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def default_opset(model: onnx.ModelProto) -> int:
    return next(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))


def control_flow_ops(model: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.node if node.op_type in CONTROL_FLOW_OPS)


def export_loop_free(
    module: torch.nn.Module,
    example: torch.Tensor,
    input_name: str,
    output_names: list[str],
    dynamic_shapes: object,
    opset: int,
    what: str,
) -> onnx.ModelProto:
    """torch.onnx.export (dynamo) of a one-input module, refusing graphs with control flow."""
    with quiet_exporter():
        program = torch.onnx.export(
            module,
            (example,),
            input_names=[input_name],
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    model = program.model_proto
    found = control_flow_ops(model)
    if found:
        raise RuntimeError(f"exported {what} has control flow {dict(found)}; the graph must be loop-free")
    return model


def save_with_metadata(model: onnx.ModelProto, out: Path, metadata_json: str) -> None:
    """Embed the metadata and write the model atomically."""
    del model.metadata_props[:]
    model.metadata_props.add(key=METADATA_KEY, value=metadata_json)
    model.producer_name = "refinevad"
    onnx.checker.check_model(model)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    onnx.save_model(model, str(tmp))
    os.replace(tmp, out)


def export_onnx(
    checkpoint: LoadedCheckpoint,
    out: str | os.PathLike[str],
    opset: int = DEFAULT_OPSET,
    max_snippets: int = DEFAULT_MAX_SNIPPETS,
) -> ExportMetadata:
    """Write the head as ONNX to `out` with its metadata in metadata_props and beside it as JSON."""
    if max_snippets < 2:
        raise ValueError(f"max_snippets must be at least 2, got {max_snippets}")
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is not supported: the exporter emits opset {MIN_OPSET} or newer")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = checkpoint.config
    head = InferenceHead(checkpoint.model).cpu()
    example_t = max(2, min(config.train_snippets, max_snippets))
    example = torch.randn(EXAMPLE_BATCH, example_t, config.feature_dim)
    batch = torch.export.Dim("batch", min=1)
    snippets = torch.export.Dim("snippets", min=1, max=max_snippets)
    model = export_loop_free(
        head,
        example,
        INPUT_NAME,
        list(OUTPUT_NAMES),
        {"features": {0: batch, 1: snippets}},
        opset,
        "head",
    )
    if default_opset(model) != opset:
        raise RuntimeError(f"asked for opset {opset} but the exporter wrote opset {default_opset(model)}")
    metadata = ExportMetadata.from_checkpoint(checkpoint, "onnx", EXPORTER, max_snippets, opset=opset)
    save_with_metadata(model, out, metadata.to_json())
    write_sidecar(out, metadata)
    log.info("exported ONNX head to %s (opset %d, max T %d)", out, metadata.opset, max_snippets)
    return metadata


def read_onnx_metadata(path: str | os.PathLike[str]) -> ExportMetadata:
    """Metadata embedded in an exported head, read without loading the weights."""
    model = onnx.load_model(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{path} is an ONNX file without RefineVAD export metadata")
    metadata = ExportMetadata.model_validate_json(props[METADATA_KEY])
    if metadata.kind != "onnx":
        raise ValueError(f"{path} holds metadata of a {metadata.kind} export")
    return metadata
