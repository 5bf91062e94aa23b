import pytest

from model.config import RefineVADConfig


@pytest.fixture
def small_config() -> RefineVADConfig:
    """A small but complete RefineVAD: every module present, fast on the CPU."""
    return RefineVADConfig(
        feature_dim=32,
        category_names=["Biking", "Vehicle", "Skateboarding"],
        transformer_ff=64,
        proj_dim=16,
        emb_dim=8,
        classifier_hidden=16,
        dropout=0.1,
    )
