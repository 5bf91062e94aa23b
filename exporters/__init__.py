"""Exports of the RefineVAD head (TorchScript, ONNX) and of the CLIP image encoder, the inference backends, and ONNX Runtime for the appearance network."""
