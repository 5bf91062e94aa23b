"""Fine-tuning a single head from its checkpoint on new videos (synthetic features: fast, learnable)."""

import pytest
import torch

from model.checkpoint import load_checkpoint, load_checkpoint_payload
from model.config import RefineVADConfig
from model.data.datasets import FeatureSet
from model.data.feature_store import FeatureStore
from model.data.synthetic import SyntheticGenerator, SyntheticSpec
from model.fine_tune import FINE_TUNE_DEFAULTS, fine_tune, fine_tune_config
from model.training import TrainConfig, train

SMALL = {
    "input_norm": "standardize",
    "transformer_ff": 32,
    "proj_dim": 32,
    "emb_dim": 8,
    "classifier_hidden": 16,
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("fine_tune")
    gen = SyntheticGenerator(SyntheticSpec(dim=16))
    gen.write_store(root / "base", 12, 12, seed=1, prefix="base")
    gen.write_store(root / "site", 4, 4, seed=2, prefix="site")
    features = FeatureSet.from_store(FeatureStore.open(root / "base"))
    config = RefineVADConfig(feature_dim=16, category_names=list(features.category_names), **SMALL)
    result = train(
        features, root / "run", TrainConfig(epochs=2, batch_size=8, threads=1), config, progress=False
    )
    return root, result.best_checkpoint


def test_a_single_head_is_fine_tuned_from_its_weights(base, tmp_path):
    root, checkpoint = base
    site = FeatureSet.from_store(FeatureStore.open(root / "site"))
    config = fine_tune_config(load_checkpoint_payload(checkpoint)["metadata"]["train_config"], {"epochs": 2})
    assert config.batch_size == 8 and config.lr == FINE_TUNE_DEFAULTS["lr"] and config.epochs == 2
    result = fine_tune(site, checkpoint, tmp_path, config, metadata={"note": "site"}, progress=False)
    assert result.checkpoint == tmp_path / "best.pt" and len(result.members) == 1
    before, after = load_checkpoint(checkpoint), load_checkpoint(result.checkpoint)
    assert after.metadata["note"] == "site" and after.metadata["fine_tuned_from"]["checkpoint"] == "best.pt"
    assert after.metadata["feature_source"] == str(root / "site")
    # The base's standardisation is kept (not refitted on the site's videos); the head itself moved.
    assert torch.equal(before.model.input_norm.mean, after.model.input_norm.mean)
    assert not torch.equal(before.model.core.scorer.weight, after.model.core.scorer.weight)


def test_features_of_other_categories_are_refused(base, tmp_path):
    checkpoint = base[1]
    other = SyntheticGenerator(SyntheticSpec(dim=16, category_names=["Fire", "Flood"]))
    other.write_store(tmp_path / "other", 4, 4, seed=3, prefix="other")
    features = FeatureSet.from_store(FeatureStore.open(tmp_path / "other"))
    with pytest.raises(ValueError, match="are not the base model's"):
        fine_tune(features, checkpoint, tmp_path / "out", TrainConfig(epochs=1), progress=False)
