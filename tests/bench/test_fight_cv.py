"""bench.fight_cv's representations: each column range carries the identity of the backbone that gives exactly
those columns, so a model trained on them loads (and is checked) with that backbone."""

from __future__ import annotations

import numpy as np

from bench.fight_cv import REPRESENTATIONS, columns
from model.backbones.identity import BackboneIdentity
from model.backbones.motion import DESCRIPTOR_VERSION, DYNAMICS_VERSION, MotionBackbone
from model.data.datasets import FeatureSet, VideoRecord

TWO_STREAM_V2 = BackboneIdentity(
    name="two_stream",
    architecture="efficientnet_lite0:tf_efficientnet_lite0/size=240/frames=4/pool=max/layer=blocks"
    "+motion:opencv-grid-4x4+dynamics-240x180",
    weights=f"sha256:abc+{DYNAMICS_VERSION}",
    dim=724,
)


def test_column_ranges_load_with_their_backbones_identity(tmp_path) -> None:
    x = np.arange(3 * 724, dtype=np.float32).reshape(3, 724)
    np.save(tmp_path / "a.npy", x)
    record = VideoRecord(name="a", label=1, category="Fighting", crops=(tmp_path / "a.npy",))
    features = FeatureSet((record,), ("Fighting",), 724, TWO_STREAM_V2, "test")
    assert columns(features, "v2") is features
    v1 = columns(features, "v1")
    assert v1.backbone.dim == 656 and v1.backbone.weights.endswith(DESCRIPTOR_VERSION)
    assert "dynamics" not in v1.backbone.architecture
    np.testing.assert_array_equal(v1.load(record), x[:, :656])
    motion = columns(features, "motion-v2")
    # Exactly what the motion backbone alone reports with the v2 descriptor.
    assert motion.backbone == MotionBackbone(version=DYNAMICS_VERSION).identity
    np.testing.assert_array_equal(motion.load(record), x[:, 320:])
    dynamics = columns(features, "dynamics")
    assert dynamics.feature_dim == 68 and dynamics.backbone.architecture.endswith("[656:None]")
    assert set(REPRESENTATIONS) == {"v1", "v2", "motion-v2", "dynamics"}
