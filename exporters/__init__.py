"""Exports of the RefineVAD head (TorchScript, ONNX) and of the CLIP image encoder, and the inference backends."""
