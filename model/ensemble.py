"""A deep ensemble of RefineVAD heads: members of one config trained with different seeds, outputs averaged.

Averaging the predictive probabilities of independently initialised networks (Lakshminarayanan et al., "Simple and
Scalable Predictive Uncertainty Estimation using Deep Ensembles", NeurIPS 2017) removes most of the seed-to-seed
spread of a single weakly supervised head; the members share the backbone's features, so the cost is the head's
alone, small next to the backbone's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from model.config import RefineVADConfig
from model.refinevad import RefineVAD, RefineVADOutput


class RefineVADEnsemble(nn.Module):
    """`members` RefineVAD heads of one `config`; same inputs and `RefineVADOutput` as a single head.

    - `scores` [B, T]: the members' mean snippet probability; `logits` [B, T] its log-odds, computed in log space
      (logsumexp of the members' log-sigmoids) so it stays finite however sure the members are.
    - `category_probs`, `category_weights` [B, C]: the members' means (the weights still sum to 1).
    - `rough_logits` [B, T], `category_logits` [B, C, 2], `category_embedding` [B, d_emb]: the members' means,
      kept for the output's shape; each member learns its own embedding space, so the mean embedding is not one of
      them (only training reads it, and ensembles are built from trained members, not trained).
    """

    def __init__(self, config: RefineVADConfig, members: int) -> None:
        super().__init__()
        if members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {members}")
        self.config = config
        self.members = nn.ModuleList(RefineVAD(config) for _ in range(members))
        self.log_members = math.log(members)

    def forward(self, x: Tensor, category: torch.Tensor | None = None) -> RefineVADOutput:
        """x [B, T, D] (T >= 1); `category` as `RefineVAD.forward` (training only)."""
        # Lists of tensors, not of outputs: TorchScript types these loops over the ModuleList.
        logit_list: list[Tensor] = []
        rough: list[Tensor] = []
        cat_logits: list[Tensor] = []
        cat_probs: list[Tensor] = []
        cat_weights: list[Tensor] = []
        embeddings: list[Tensor] = []
        for member in self.members:
            out = member(x, category)
            logit_list.append(out.logits)
            rough.append(out.rough_logits)
            cat_logits.append(out.category_logits)
            cat_probs.append(out.category_probs)
            cat_weights.append(out.category_weights)
            embeddings.append(out.category_embedding)
        logits = torch.stack(logit_list)  # [M, B, T]
        # log p = log mean sigmoid(l_m), log (1 - p) = log mean sigmoid(-l_m): p's log-odds without 0 or 1.
        log_p = torch.logsumexp(nn.functional.logsigmoid(logits), 0)
        log_q = torch.logsumexp(nn.functional.logsigmoid(-logits), 0)
        return RefineVADOutput(
            log_p - log_q,
            torch.exp(log_p - self.log_members),
            torch.stack(rough).mean(0),
            torch.stack(cat_logits).mean(0),
            torch.stack(cat_probs).mean(0),
            torch.stack(cat_weights).mean(0),
            torch.stack(embeddings).mean(0),
        )


HeadModel = RefineVAD | RefineVADEnsemble
