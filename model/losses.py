"""RefineVAD training losses: L = L_MIL + 0.1 L_GMM + 0.2 L_cat (spec section Losses).

L_GMM is our own design (the cited paper's code is not public), documented in `gmm_smoothing_loss`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor

from model.config import topk_count
from model.refinevad import RefineVAD, RefineVADOutput


class LossConfig(BaseModel):
    lambda_gmm: float = Field(0.1, ge=0)
    lambda_cat: float = Field(0.2, ge=0)
    use_gmm: bool = True
    use_cat: bool = True
    margin: float = Field(1.0, gt=0, description="hinge margin of the MIL ranking loss")
    lambda_smooth: float = Field(1e-2, ge=0, description="temporal smoothness on anomalous videos")
    lambda_sparse: float = Field(1e-3, ge=0, description="sparsity on anomalous videos")
    topk_divisor: int = Field(16, gt=0, description="k = max(1, T // topk_divisor + 1)")
    gmm_window: int = Field(3, ge=1, description="temporal neighbourhood (snippets, odd) of the GMM loss")
    gmm_min_std: float = Field(0.05, gt=0, description="floor on the mixture's component std")
    category_class_weights: list[float] | None = None
    lambda_known_normal: float = Field(
        1.0,
        ge=0,
        description="weight of the known-normal BCE on spliced training videos (used when splicing)",
    )
    known_normal_rough: bool = Field(
        False, description="apply the known-normal BCE to CORE's rough logits too (they weight its pooling)"
    )
    lambda_live: float = Field(
        0.0,
        ge=0,
        description="weight of the live-window consistency term (`live_consistency_loss`, "
        "model.training.live_window_consistency): each step, the snippets of a random prefix of the batch, scored "
        "from the prefix alone (an approximation of the live window, which sees one snippet ahead), are drawn "
        "towards their scores from the whole clip; 0 = off",
    )


def topk_mean(scores: Tensor, divisor: int = 16) -> Tensor:
    """Mean of the k highest snippet scores per video, k = max(1, T // divisor + 1). scores [B, T] -> [B]."""
    k = min(scores.shape[1], topk_count(scores.shape[1], divisor))
    return scores.topk(k, dim=1).values.mean(dim=1)


def mil_ranking_loss(
    scores: Tensor,
    labels: Tensor,
    margin: float = 1.0,
    lambda_smooth: float = 1e-2,
    lambda_sparse: float = 1e-3,
    topk_divisor: int = 16,
) -> Tensor:
    """Top-k MIL hinge between every (anomalous, normal) pair of the batch, plus smoothness and sparsity on the
    anomalous videos. With no pair in the batch the ranking term is zero (nothing to rank)."""
    top = topk_mean(scores, topk_divisor)
    anomalous = labels > 0.5
    normal = ~anomalous
    pair = anomalous.unsqueeze(1) & normal.unsqueeze(0)
    hinge = F.relu(margin - top.unsqueeze(1) + top.unsqueeze(0))
    n_pairs = pair.sum()
    ranking = (hinge * pair).sum() / n_pairs.clamp(min=1)
    weight = anomalous.to(scores.dtype).unsqueeze(1)
    n_anomalous = anomalous.sum().clamp(min=1)
    if scores.shape[1] > 1:
        smooth = ((scores[:, 1:] - scores[:, :-1]).pow(2) * weight).mean(dim=1).sum() / n_anomalous
    else:
        smooth = scores.new_zeros(())
    sparse = (scores * weight).mean(dim=1).sum() / n_anomalous
    return ranking + lambda_smooth * smooth + lambda_sparse * sparse


def known_normal_loss(logits: Tensor, known_normal: Tensor) -> Tensor:
    """Binary cross-entropy towards 0 of the snippets known to be normal (the normal part of a spliced training
    video, `model.data.datasets.BalancedBatches`), averaged over them; zero when there are none.
    logits [B, T] (pre-sigmoid snippet scores), known_normal [B, T] bool."""
    if not bool(known_normal.any()):
        return logits.new_zeros(())
    picked = logits[known_normal]
    return F.binary_cross_entropy_with_logits(picked, torch.zeros_like(picked))


def live_consistency_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Mean binary KL divergence KL(p_teacher || p_student) over snippets; zero where the two agree.

    student_logits [B, L]: snippet logits of a clip prefix scored from the prefix alone (as the live window scores
    them, without what comes after the prefix); teacher_logits [B, L]: the same snippets' logits from the whole clip
    (offline), treated as fixed targets (detach them). Uses no label. Self-distillation in the sense of Hinton
    et al. 2015 ("Distilling the Knowledge in a Neural Network"), from a model's full context to its own causal
    windows.
    """
    target = torch.sigmoid(teacher_logits)
    cross_entropy = F.binary_cross_entropy_with_logits(student_logits, target, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(teacher_logits, target, reduction="none")
    return (cross_entropy - entropy).mean()


def _normal_logpdf(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return -0.5 * ((x - mean) / std).pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)


def gmm_smoothing_loss(
    scores: Tensor,
    category_embedding: Tensor,
    mean_head: torch.nn.Module,
    window: int = 3,
    min_std: float = 0.05,
) -> Tensor:
    """Category-aware Gaussian-mixture smoothing loss (our design of the paper's L_GMM).

    Per video, a two-component 1-D mixture (normal / anomalous) is fitted to its snippet scores from the
    per-video mean m and standard deviation s (treated as constants, as a fit is): component means m - s and
    m + s, shared std max(s, min_std), anomalous weight pi = clamp(m, 0.05, 0.95). The anomalous mean is moved by
    a learnable head of the video's soft category embedding v: mu_a = m + s * (1 + tanh(head(v))), so each
    category can sit at its own score level. Each snippet's neighbourhood (mean score over `window` snippets)
    gives a responsibility gamma_t for the anomalous component; the loss is the snippets' mean negative
    log-likelihood under the mixture of their neighbourhood, gamma_t N(x_t | mu_a) + (1 - gamma_t) N(x_t | mu_n),
    minus its value at the component means, so an isolated spike or dip (unlikely under its neighbourhood's
    component) costs more than a smooth two-level curve.
    """
    detached = scores.detach()
    m = detached.mean(dim=1, keepdim=True)
    s = detached.std(dim=1, keepdim=True, unbiased=False) if scores.shape[1] > 1 else torch.zeros_like(m)
    std = s.clamp(min=min_std)
    pi = m.clamp(0.05, 0.95)
    mu_n = m - s
    mu_a = m + s * (1.0 + torch.tanh(mean_head(category_embedding)))
    pad = window // 2
    neighbourhood = F.avg_pool1d(
        scores.unsqueeze(1), kernel_size=2 * pad + 1, stride=1, padding=pad, count_include_pad=False
    ).squeeze(1)
    log_a = torch.log(pi) + _normal_logpdf(neighbourhood, mu_a, std)
    log_n = torch.log(1 - pi) + _normal_logpdf(neighbourhood, mu_n, std)
    gamma = torch.sigmoid(log_a - log_n)
    likelihood = (
        gamma * _normal_logpdf(scores, mu_a, std).exp()
        + (1 - gamma) * _normal_logpdf(scores, mu_n, std).exp()
    )
    best = _normal_logpdf(mu_n, mu_n, std).exp()  # the peak density: the loss is 0 at a component mean
    return (torch.log(best) - torch.log(likelihood + 1e-12)).mean()


def category_loss(category_logits: Tensor, categories: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """Sum over categories of BCE(sigmoid(z_c), t_c), t_c = [0, 1] for the video's category, [1, 0] otherwise
    (normal videos, category -1: [1, 0] for every c); mean over the batch."""
    num_categories = category_logits.shape[1]
    positive = F.one_hot(categories.clamp(min=0), num_categories).to(category_logits.dtype)
    positive = positive * (categories >= 0).unsqueeze(-1).to(category_logits.dtype)
    target = torch.stack([1 - positive, positive], dim=-1)
    bce = F.binary_cross_entropy_with_logits(category_logits, target, reduction="none").sum(dim=-1)
    if class_weights is not None:
        bce = bce * class_weights.to(bce.dtype).unsqueeze(0)
    return bce.sum(dim=1).mean()


def total_loss(
    model: RefineVAD,
    out: RefineVADOutput,
    labels: Tensor,
    categories: Tensor,
    config: LossConfig | None = None,
    known_normal: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The weighted total and its parts (detached) for logging. `known_normal` [B, T] bool adds
    `lambda_known_normal * known_normal_loss` (spliced training videos)."""
    config = config or LossConfig()
    mil = mil_ranking_loss(
        out.scores, labels, config.margin, config.lambda_smooth, config.lambda_sparse, config.topk_divisor
    )
    total = mil
    parts: dict[str, Tensor] = {"mil": mil.detach()}
    if config.use_gmm and config.lambda_gmm > 0:
        gmm = gmm_smoothing_loss(
            out.scores, out.category_embedding, model.gmm_mean_head, config.gmm_window, config.gmm_min_std
        )
        total = total + config.lambda_gmm * gmm
        parts["gmm"] = gmm.detach()
    if config.use_cat and config.lambda_cat > 0:
        weights = (
            torch.tensor(config.category_class_weights, device=labels.device)
            if config.category_class_weights
            else None
        )
        cat = category_loss(out.category_logits, categories, weights)
        total = total + config.lambda_cat * cat
        parts["cat"] = cat.detach()
    if known_normal is not None and config.lambda_known_normal > 0:
        known_normal = known_normal.to(out.logits.device)
        normal_part = known_normal_loss(out.logits, known_normal)
        if config.known_normal_rough:
            normal_part = normal_part + known_normal_loss(out.rough_logits, known_normal)
        total = total + config.lambda_known_normal * normal_part
        parts["known_normal"] = normal_part.detach()
    parts["total"] = total.detach()
    return total, parts
