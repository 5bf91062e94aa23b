import pytest
import torch

from model.shift import adaptive_temporal_shift, shift_sizes, soft_temporal_shift, straight_through_shift


def reference_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The spec's definition written as plain nested loops."""
    b_n, t_n, d_n = x.shape
    y = torch.zeros_like(x)
    for b in range(b_n):
        for t in range(t_n):
            s = int(shift[b, t])
            for c in range(d_n):
                if c < s:
                    y[b, t, c] = x[b, t - 1, c] if t > 0 else 0.0
                elif c < 2 * s:
                    y[b, t, c] = x[b, t + 1, c] if t + 1 < t_n else 0.0
                else:
                    y[b, t, c] = x[b, t, c]
    return y


@pytest.mark.parametrize("d, k", [(16, 8), (20, 8), (13, 4), (24, 3)])
def test_shift_matches_loop_reference(d: int, k: int) -> None:
    g = torch.Generator().manual_seed(d * 31 + k)
    b, t = 3, 7
    x = torch.randn(b, t, d, generator=g)
    max_s = d // k
    # Every t, both ends included; s_t covers 0, 1, D/K, odd values and random sizes.
    values = sorted({0, 1, max_s, max(1, max_s - 1) | 1, 3 % (max_s + 1)})
    shift = torch.randint(0, max_s + 1, (b, t), generator=g)
    for i, s in enumerate(values):
        shift[i % b, :] = s
    shift[0, 0], shift[0, -1] = max_s, max_s
    assert torch.equal(adaptive_temporal_shift(x, shift), reference_shift(x, shift))


def test_shift_zero_is_identity_and_full_fold_moves_channels() -> None:
    x = torch.randn(2, 5, 16)
    assert torch.equal(adaptive_temporal_shift(x, torch.zeros(2, 5, dtype=torch.long)), x)
    y = adaptive_temporal_shift(x, torch.full((2, 5), 2, dtype=torch.long))
    assert torch.equal(y[:, 1:, :2], x[:, :-1, :2])
    assert torch.equal(y[:, :-1, 2:4], x[:, 1:, 2:4])
    assert torch.all(y[:, 0, :2] == 0) and torch.all(y[:, -1, 2:4] == 0)


def test_shift_sizes_floor() -> None:
    ratio = torch.tensor([[0.0, 0.5, 0.999, 1.0]])
    assert shift_sizes(ratio, 20, 8).tolist() == [[0, 1, 2, 2]]
    assert shift_sizes(ratio, 768, 8).tolist() == [[0, 48, 95, 96]]


def test_shift_single_step_sequence() -> None:
    x = torch.randn(1, 1, 8)
    y = adaptive_temporal_shift(x, torch.tensor([[1]]))
    assert torch.all(y[0, 0, :2] == 0) and torch.equal(y[0, 0, 2:], x[0, 0, 2:])


def test_shift_scripts_and_traces() -> None:
    x = torch.randn(2, 6, 16)
    s = torch.randint(0, 3, (2, 6))
    scripted = torch.jit.script(adaptive_temporal_shift)
    traced = torch.jit.trace(adaptive_temporal_shift, (x, s))
    x2, s2 = torch.randn(3, 11, 16), torch.randint(0, 3, (3, 11))
    expected = adaptive_temporal_shift(x2, s2)
    assert torch.equal(scripted(x2, s2), expected)
    assert torch.equal(traced(x2, s2), expected)
    graph = str(scripted.graph)
    assert "prim::Loop" not in graph and "aten::item" not in graph


def test_straight_through_forward_is_exact_and_passes_gradient() -> None:
    x = torch.randn(2, 6, 24, requires_grad=True)
    ratio = torch.rand(2, 6, requires_grad=True)
    y = straight_through_shift(x, ratio, 8)
    exact = adaptive_temporal_shift(x, shift_sizes(ratio, 24, 8))
    assert torch.allclose(y, exact, atol=1e-6)
    (y * torch.randn_like(y)).sum().backward()
    assert ratio.grad is not None and ratio.grad.abs().sum() > 0
    assert x.grad is not None


def test_soft_shift_approaches_hard_shift_for_integer_sizes() -> None:
    x = torch.randn(1, 4, 32)
    size = torch.full((1, 4), 3.0)
    soft = soft_temporal_shift(x, size, temperature=0.01)
    assert torch.allclose(soft, adaptive_temporal_shift(x, size.long()), atol=1e-5)
