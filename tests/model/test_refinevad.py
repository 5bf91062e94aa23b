import itertools

import pytest
import torch

from model import RefineVAD, RefineVADConfig
from model.motar import MoTAR, motion_variance
from model.refinevad import count_parameters


def test_output_shapes_and_ranges(small_config: RefineVADConfig) -> None:
    model = RefineVAD(small_config)
    out = model(torch.randn(4, 20, 32), torch.tensor([0, 2, -1, -1]))
    c = small_config.num_categories
    assert out.logits.shape == out.scores.shape == out.rough_logits.shape == (4, 20)
    assert out.category_logits.shape == (4, c, 2)
    assert out.category_probs.shape == out.category_weights.shape == (4, c)
    assert out.category_embedding.shape == (4, small_config.emb_dim)
    assert torch.allclose(out.scores, torch.sigmoid(out.logits))
    assert torch.allclose(out.category_weights.sum(-1), torch.ones(4))
    assert torch.all((out.category_probs >= 0) & (out.category_probs <= 1))


def test_motar_parameter_count_matches_paper() -> None:
    motar = MoTAR(RefineVADConfig(feature_dim=768))
    assert abs(count_parameters(motar) - 11.03e6) / 11.03e6 < 0.01


def test_motion_variance_channel_mean_is_variance_of_difference() -> None:
    x = torch.randn(2, 5, 12)
    v = motion_variance(x)
    d = x[:, 1:] - x[:, :-1]
    assert torch.allclose(v[:, 1:].mean(-1), d.var(-1, unbiased=False), atol=1e-6)
    assert torch.all(v[:, 0] == 0)


@pytest.mark.parametrize("shift_grad, expect_grad", [("ste", True), ("none", False)])
def test_shift_predictor_gradient(small_config: RefineVADConfig, shift_grad: str, expect_grad: bool) -> None:
    torch.manual_seed(0)
    model = RefineVAD(small_config.model_copy(update={"shift_grad": shift_grad})).train()
    out = model(torch.randn(4, 16, 32) * 3, torch.tensor([0, 1, -1, -1]))
    out.scores.sum().backward()
    grads = [p.grad for p in model.motar.shift_predictor.parameters()]
    total = sum(float(g.abs().sum()) for g in grads if g is not None)
    assert (total > 0) is expect_grad


def _core_with_logits(config: RefineVADConfig, logits: torch.Tensor):
    model = RefineVAD(config).eval()
    probs = torch.softmax(logits, -1)[..., 1]
    return model.core.category_weights(logits, probs)


def test_category_weights_uniform_when_no_category_passes_tau(small_config: RefineVADConfig) -> None:
    logits = torch.tensor([[[2.0, -1.0], [1.0, 0.5], [3.0, 0.0]]])  # every p_c < 0.5
    w = _core_with_logits(small_config, logits)
    assert torch.allclose(w, torch.full((1, 3), 1 / 3))


def test_category_weights_softmax_of_anomalous_logits_when_one_passes(small_config: RefineVADConfig) -> None:
    logits = torch.tensor([[[0.0, 2.0], [1.0, 0.5], [3.0, 0.0]]])  # category 0 passes
    w = _core_with_logits(small_config, logits)
    assert torch.allclose(w, torch.softmax(logits[..., 1], -1))
    hard = _core_with_logits(small_config.model_copy(update={"soft_weights": False}), logits)
    assert hard.tolist() == [[1.0, 0.0, 0.0]]


def test_ground_truth_prototype_added_only_for_anomalous_training_videos(
    small_config: RefineVADConfig,
) -> None:
    model = RefineVAD(small_config.model_copy(update={"dropout": 0.0}))
    x = torch.randn(3, 8, 32)
    model.train()
    with_cat = model(x, torch.tensor([1, -1, 2]))
    without = model(x, None)
    e = model.core.prototypes
    delta = with_cat.category_embedding - without.category_embedding
    assert torch.allclose(delta[0], e[1], atol=1e-6)
    assert torch.allclose(delta[1], torch.zeros_like(delta[1]), atol=1e-6)
    assert torch.allclose(delta[2], e[2], atol=1e-6)
    model.eval()
    inference = model(x, torch.tensor([1, -1, 2]))
    plain = model(x)
    assert torch.allclose(inference.category_embedding, plain.category_embedding)
    assert torch.allclose(inference.scores, plain.scores)
    expected_v = plain.category_weights @ e
    assert torch.allclose(plain.category_embedding, expected_v, atol=1e-6)


ABLATIONS = list(
    itertools.product(
        [True, False],
        ["none", "linear", "addnorm_ffn", "cross_attention"],
        [True, False],
        ["weighted", "topk"],
        ["ste", "none"],
    )
)


@pytest.mark.parametrize("use_motar, injection, soft, pooling, shift_grad", ABLATIONS)
def test_every_ablation_switch_builds_trains_and_runs(
    small_config: RefineVADConfig, use_motar, injection, soft, pooling, shift_grad
) -> None:
    config = small_config.model_copy(
        update={
            "use_motar": use_motar,
            "injection": injection,
            "soft_weights": soft,
            "pooling": pooling,
            "shift_grad": shift_grad,
        }
    )
    model = RefineVAD(config)
    out = model(torch.randn(2, 9, 32), torch.tensor([0, -1]))
    out.scores.mean().backward()
    model.eval()
    for b, t in [(1, 1), (3, 5)]:
        eval_out = model(torch.randn(b, t, 32))
        assert eval_out.scores.shape == (b, t)
        assert torch.isfinite(eval_out.scores).all()


def test_batch_one_length_one_and_long_sequences(small_config: RefineVADConfig) -> None:
    model = RefineVAD(small_config).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32)).scores.shape == (1, 1)
        long = model(torch.randn(1, 2000, 32))
    assert long.scores.shape == (1, 2000) and torch.isfinite(long.scores).all()


def test_eval_is_deterministic_and_batch_independent(small_config: RefineVADConfig) -> None:
    model = RefineVAD(small_config).eval()
    x = torch.randn(3, 12, 32)
    with torch.no_grad():
        a, b = model(x), model(x)
        single = model(x[1:2])
    assert torch.equal(a.scores, b.scores)
    assert torch.allclose(a.scores[1:2], single.scores, atol=1e-5)


def test_torchscript_matches_eager(small_config: RefineVADConfig) -> None:
    for config in (small_config, small_config.model_copy(update={"pooling": "topk", "soft_weights": False})):
        model = RefineVAD(config).eval()
        scripted = torch.jit.script(model)
        for b, t in [(1, 1), (2, 7), (1, 100)]:
            x = torch.randn(b, t, 32)
            with torch.no_grad():
                eager, script = model(x), scripted(x)
            for name in ("scores", "category_probs", "category_weights", "rough_logits"):
                assert torch.allclose(getattr(eager, name), getattr(script, name), atol=1e-5), name


def test_config_rejects_inconsistent_values() -> None:
    with pytest.raises(ValueError):
        RefineVADConfig(feature_dim=30, transformer_heads=4)
    with pytest.raises(ValueError):
        RefineVADConfig(category_names=["a", "a"])
    with pytest.raises(ValueError):
        RefineVADConfig(injection="bogus")
