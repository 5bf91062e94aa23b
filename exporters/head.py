"""The inference view of RefineVAD that every export and backend runs: features in, the served outputs out."""

from __future__ import annotations

import copy

from torch import Tensor, nn

from model.ensemble import HeadModel


class InferenceHead(nn.Module):
    """features [B, T, D] -> (scores [B, T], category_probs [B, C], category_weights [B, C], logits [B, T]).

    The order is exporters.metadata.OUTPUT_NAMES. A plain tuple keeps TorchScript and ONNX outputs identical.
    """

    def __init__(self, model: HeadModel) -> None:
        super().__init__()
        # A copy in eval mode: exporting must not flip the caller's model out of training.
        self.model = copy.deepcopy(model)
        self.eval()

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out = self.model(features)
        return out.scores, out.category_probs, out.category_weights, out.logits
