"""Comparison of an exported head's outputs with the eager model's."""

from __future__ import annotations

import torch

from model.refinevad import RefineVADOutput

# fp32 parity required of every export and backend.
ATOL = 1e-4
COMPARED = ("scores", "category_probs", "category_weights", "logits")


def assert_matches_eager(outputs: dict[str, torch.Tensor], eager: RefineVADOutput, label: str) -> None:
    for name in COMPARED:
        got, want = outputs[name], getattr(eager, name)
        assert got.shape == want.shape, f"{label} {name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
        err = (got.float().cpu() - want.float().cpu()).abs().max().item()
        assert err <= ATOL, f"{label} {name}: max abs error {err:.2e} > {ATOL:g}"
