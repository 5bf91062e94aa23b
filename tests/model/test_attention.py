from __future__ import annotations

import pytest
import torch

from model.attention import TransformerEncoder, band_mask
from model.config import RefineVADConfig
from model.refinevad import RefineVAD


def test_band_mask_is_true_exactly_within_the_window():
    mask = band_mask(6, 2, torch.device("cpu"))
    for i in range(6):
        for j in range(6):
            assert bool(mask[i, j]) == (abs(i - j) <= 2)


@pytest.mark.parametrize("window,layers", [(1, 1), (2, 1), (1, 2)])
def test_windowed_encoder_output_ignores_snippets_beyond_its_reach(window: int, layers: int):
    torch.manual_seed(0)
    encoder = TransformerEncoder(16, 4, 32, 0.0, layers, window=window).eval()
    x = torch.randn(1, 12, 16)
    reach = window * layers
    far = x.clone()
    far[:, 11] += 5.0  # a change at the last snippet
    near_ends = 11 - reach
    with torch.inference_mode():
        base, moved = encoder(x), encoder(far)
    # Snippets more than `reach` steps away are untouched, the ones within reach do change.
    torch.testing.assert_close(moved[:, :near_ends], base[:, :near_ends], rtol=0, atol=0)
    assert (moved[:, near_ends:] - base[:, near_ends:]).abs().amax(dim=-1).min() > 1e-4


def test_global_encoder_output_sees_the_whole_clip():
    torch.manual_seed(0)
    encoder = TransformerEncoder(16, 4, 32, 0.0, 1).eval()
    x = torch.randn(1, 12, 16)
    far = x.clone()
    far[:, 11] += 5.0
    with torch.inference_mode():
        assert (encoder(far)[:, 0] - encoder(x)[:, 0]).abs().max() > 1e-4


def test_window_wider_than_the_clip_equals_global_attention():
    torch.manual_seed(0)
    windowed = TransformerEncoder(16, 4, 32, 0.0, 2, window=8).eval()
    whole = TransformerEncoder(16, 4, 32, 0.0, 2).eval()
    whole.load_state_dict(windowed.state_dict())
    x = torch.randn(3, 5, 16)
    with torch.inference_mode():
        torch.testing.assert_close(windowed(x), whole(x))


def test_encoder_rejects_a_window_below_one():
    with pytest.raises(ValueError, match="attention window"):
        TransformerEncoder(16, 4, 32, 0.0, 1, window=0)


def test_refinevad_config_threads_the_window_to_motar():
    config = RefineVADConfig(feature_dim=32, proj_dim=16, transformer_ff=32, attention_window=3)
    assert RefineVAD(config).motar.transformer.window == 3
    assert RefineVAD(RefineVADConfig(feature_dim=32)).motar.transformer.window is None
    with pytest.raises(ValueError):
        RefineVADConfig(attention_window=0)
