import pytest
import torch

from model import RefineVAD, RefineVADConfig
from model.losses import (
    LossConfig,
    category_loss,
    gmm_smoothing_loss,
    mil_ranking_loss,
    topk_mean,
    total_loss,
)


def test_topk_mean_uses_k_from_length() -> None:
    scores = torch.tensor([[0.0] * 30 + [1.0, 0.5]])  # T=32 -> k = 3
    assert torch.allclose(topk_mean(scores), torch.tensor([0.5]))
    assert torch.allclose(topk_mean(torch.tensor([[0.7]])), torch.tensor([0.7]))


def test_ranking_loss_falls_as_anomalous_topk_rises_above_normal() -> None:
    labels = torch.tensor([1.0, 0.0])
    values = []
    for level in (0.1, 0.4, 0.7, 1.0):
        anomalous = torch.full((16,), 0.1)
        anomalous[5:7] = level
        scores = torch.stack([anomalous, torch.full((16,), 0.1)])
        values.append(float(mil_ranking_loss(scores, labels, lambda_smooth=0, lambda_sparse=0)))
    assert values == sorted(values, reverse=True) and values[0] > values[-1]
    perfect = torch.stack([torch.ones(16), torch.zeros(16)])
    assert float(mil_ranking_loss(perfect, labels, lambda_smooth=0, lambda_sparse=0)) == 0.0


def test_ranking_loss_zero_without_pairs_and_regularisers_only_on_anomalous() -> None:
    noisy = torch.rand(2, 16)
    assert float(mil_ranking_loss(noisy, torch.zeros(2), lambda_smooth=1, lambda_sparse=1)) == 0.0
    smooth = torch.full((1, 16), 0.2)
    jagged = torch.tensor([[0.0, 0.4] * 8])
    lab = torch.ones(1)
    assert float(mil_ranking_loss(jagged, lab, lambda_sparse=0)) > float(
        mil_ranking_loss(smooth, lab, lambda_sparse=0)
    )


def test_gmm_loss_prefers_smooth_two_level_curves_to_spikes() -> None:
    head = torch.nn.Linear(4, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    v = torch.zeros(1, 4)
    step = torch.tensor([[0.1] * 8 + [0.9] * 8])
    spiky = torch.tensor([[0.1, 0.9] * 8])
    flat = torch.full((1, 16), 0.3)
    with torch.no_grad():
        step_loss = float(gmm_smoothing_loss(step, v, head))
        spiky_loss = float(gmm_smoothing_loss(spiky, v, head))
        flat_loss = float(gmm_smoothing_loss(flat, v, head))
    assert spiky_loss > step_loss
    assert abs(flat_loss) < 1e-4  # minimal: every snippet at a component mean


def test_gmm_loss_gives_the_category_head_a_gradient() -> None:
    head = torch.nn.Linear(4, 1)
    scores = torch.tensor([[0.1] * 6 + [0.8, 0.9, 0.7] + [0.1] * 7])
    loss = gmm_smoothing_loss(scores, torch.randn(1, 4), head)
    loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_category_loss_targets() -> None:
    c = 3
    right = torch.tensor([[[5.0, -5.0], [-5.0, 5.0], [5.0, -5.0]]])  # category 1 anomalous
    wrong = torch.tensor([[[-5.0, 5.0], [5.0, -5.0], [5.0, -5.0]]])
    cat = torch.tensor([1])
    assert float(category_loss(right, cat)) < 0.1 < float(category_loss(wrong, cat))
    normal_right = torch.tensor([[[5.0, -5.0]] * c])
    assert float(category_loss(normal_right, torch.tensor([-1]))) < 0.1
    assert float(category_loss(right, torch.tensor([-1]))) > 1.0
    weighted = category_loss(wrong, cat, torch.tensor([0.0, 1.0, 0.0]))
    assert float(weighted) < float(category_loss(wrong, cat))


def test_total_loss_is_weighted_sum_and_switchable(small_config: RefineVADConfig) -> None:
    torch.manual_seed(0)
    model = RefineVAD(small_config)
    cats = torch.tensor([0, 2, -1, -1])
    labels = (cats >= 0).float()
    out = model(torch.randn(4, 16, 32), cats)
    loss, parts = total_loss(model, out, labels, cats, LossConfig())
    expected = parts["mil"] + 0.1 * parts["gmm"] + 0.2 * parts["cat"]
    assert torch.allclose(loss.detach(), expected)
    mil_only, parts2 = total_loss(model, out, labels, cats, LossConfig(use_gmm=False, use_cat=False))
    assert set(parts2) == {"mil", "total"} and torch.allclose(mil_only.detach(), parts["mil"])
    loss.backward()
    assert all(p.grad is not None for p in model.core.classifier.parameters())


def test_known_normal_loss_pushes_only_the_marked_snippets_down():
    from model.losses import known_normal_loss

    logits = torch.tensor([[2.0, -1.0, 3.0], [0.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, False, False], [False, False, True]])
    loss = known_normal_loss(logits, mask)
    expected = (
        torch.nn.functional.softplus(torch.tensor(2.0)) + torch.nn.functional.softplus(torch.tensor(0.0))
    ) / 2
    assert float(loss.detach()) == pytest.approx(float(expected))
    loss.backward()
    assert logits.grad[0, 0] > 0 and logits.grad[1, 2] > 0  # descent lowers them
    assert logits.grad[0, 1] == 0 and logits.grad[0, 2] == 0 and logits.grad[1, 0] == 0
    assert float(known_normal_loss(logits, torch.zeros_like(mask))) == 0.0


def test_live_consistency_loss_is_the_binary_kl_to_the_whole_clip_scores():
    from model.losses import live_consistency_loss

    teacher = torch.tensor([[2.0, -1.0, 0.5]])
    assert float(live_consistency_loss(teacher.clone(), teacher)) == pytest.approx(0.0, abs=1e-7)
    student = torch.tensor([[0.0, -1.0, 3.0]], requires_grad=True)
    loss = live_consistency_loss(student, teacher)
    p, q = torch.sigmoid(teacher), torch.sigmoid(student.detach())
    kl = p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))
    assert float(loss.detach()) == pytest.approx(float(kl.mean()), rel=1e-5)
    loss.backward()
    # Descent moves each prefix score towards its whole-clip score and leaves an agreeing one alone.
    assert student.grad[0, 0] < 0 and student.grad[0, 2] > 0
    assert float(student.grad[0, 1]) == pytest.approx(0.0, abs=1e-7)
