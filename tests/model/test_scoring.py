"""Scoring a video's features through the live window, as the live service does, without the service."""

import pytest
import torch

from model import RefineVAD, RefineVADConfig
from model.scoring import live_window_scores, pad_live_window


def _window_by_window(model: RefineVAD, x: torch.Tensor, window: int) -> torch.Tensor:
    """The definition, one window per snippet: snippet t's score is at position -2 of the window ending at
    t + 1; the last snippet's at position -1 of the window ending at itself."""
    t_total = x.shape[0]
    scores = []
    for t in range(t_total):
        end = min(t + 2, t_total)
        out = model(x[max(0, end - window) : end].unsqueeze(0)).scores[0]
        scores.append(out[-2] if end == t + 2 else out[-1])
    return torch.stack(scores)


@pytest.mark.parametrize(("t_total", "window"), [(1, 4), (2, 4), (4, 4), (11, 4), (6, 32)])
def test_live_window_scores_follow_the_definition(small_config: RefineVADConfig, t_total, window) -> None:
    torch.manual_seed(0)
    model = RefineVAD(small_config).eval()
    x = torch.randn(t_total, 32)
    with torch.no_grad():
        expected = _window_by_window(model, x, window)
    for batch in (1, 3, 256):  # full windows batched any way give the same scores
        scores, weights = live_window_scores(model, x, window, batch=batch)
        assert scores.shape == (t_total,) and weights.shape == (t_total, 3)
        assert torch.allclose(scores, expected, atol=1e-5)
        assert torch.allclose(weights.sum(-1), torch.ones(t_total), atol=1e-5)


def test_live_window_scores_refuse_a_window_under_two_and_an_empty_video(
    small_config: RefineVADConfig,
) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        live_window_scores(RefineVAD(small_config).eval(), torch.randn(5, 32), 1)
    with pytest.raises(ValueError, match="no snippets"):
        live_window_scores(RefineVAD(small_config).eval(), torch.randn(0, 32), 4)


def test_start_up_windows_are_padded_with_the_first_snippet(small_config: RefineVADConfig) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32)
    padded = pad_live_window(x, 5)
    assert padded.shape == (2, 5, 32)
    assert (
        torch.equal(padded[:, 2:], x)
        and torch.equal(padded[:, 0], x[:, 0])
        and torch.equal(padded[:, 1], x[:, 0])
    )
    assert pad_live_window(x, 3) is x and pad_live_window(x, 1) is x
    # Through the live window: start-up windows padded to min_window, full ones as they were.
    model = RefineVAD(small_config).eval()
    video = torch.randn(9, 32)
    scores, _ = live_window_scores(model, video, 4, min_window=4)
    with torch.no_grad():
        first = model(pad_live_window(video[:2].unsqueeze(0), 4)).scores[0, -2]
        later = model(video[4:8].unsqueeze(0)).scores[0, -2]
    assert float(scores[0]) == pytest.approx(float(first), abs=1e-6)
    assert float(scores[6]) == pytest.approx(float(later), abs=1e-6)
    unpadded, _ = live_window_scores(model, video, 4)
    assert torch.allclose(scores[3:], unpadded[3:], atol=1e-6) and not torch.allclose(
        scores[:2], unpadded[:2]
    )
    with pytest.raises(ValueError, match="min_window"):
        live_window_scores(model, video, 4, min_window=5)


@pytest.mark.parametrize(
    ("t_total", "window", "lookahead"),
    [(1, 4, 3), (2, 4, 3), (3, 4, 3), (4, 4, 4), (11, 4, 4), (6, 32, 4), (9, 8, 6)],
)
def test_a_start_up_look_ahead_holds_back_the_first_final_scores(
    small_config: RefineVADConfig, t_total, window, lookahead
) -> None:
    torch.manual_seed(1)
    model = RefineVAD(small_config).eval()
    x = torch.randn(t_total, 32)
    expected = []
    with torch.no_grad():
        for t in range(t_total):
            if t_total < lookahead:  # no final score yet: the provisional one is the last word
                expected.append(model(x[: t + 1].unsqueeze(0)).scores[0, -1])
            elif t <= lookahead - 2:  # all from the window of the first k snippets
                expected.append(model(x[:lookahead].unsqueeze(0)).scores[0, t])
            elif t == t_total - 1:
                expected.append(model(x[max(0, t_total - window) :].unsqueeze(0)).scores[0, -1])
            else:
                expected.append(model(x[max(0, t + 2 - window) : t + 2].unsqueeze(0)).scores[0, -2])
    scores, weights = live_window_scores(model, x, window, batch=2, startup_lookahead=lookahead)
    assert scores.shape == (t_total,) and weights.shape == (t_total, 3)
    assert torch.allclose(scores, torch.stack(expected), atol=1e-5)
    # Padded start-up windows keep each snippet at its place from the end.
    padded, _ = live_window_scores(model, x, window, min_window=window, startup_lookahead=lookahead)
    with torch.no_grad():
        if t_total >= lookahead:
            first = model(pad_live_window(x[:lookahead].unsqueeze(0), window)).scores[0]
            assert torch.allclose(padded[: lookahead - 1], first[window - lookahead : -1], atol=1e-5)
    with pytest.raises(ValueError, match="startup_lookahead"):
        live_window_scores(model, x, window, startup_lookahead=window + 1)
