"""The per-camera scene model: each camera learns its own normal from its own footage, without labels.

`SceneDescriptor` turns snippets of frames into region descriptors `[S, R, d]`; a `SceneModel` holds one camera's
memory bank of them and scores new snippets with a calibrated novelty (`scene_score`); `fuse` combines it with the
RefineVAD head's score. The service persists scene models and calls these three only.
"""

from model.scene.descriptor import SceneDescriptor
from model.scene.fusion import FUSION_RULE, fuse
from model.scene.scene_model import (
    NoveltySmoother,
    SceneModel,
    SceneSettings,
    SceneState,
    SceneStatus,
    smooth_novelty,
)

__all__ = [
    "FUSION_RULE",
    "NoveltySmoother",
    "SceneDescriptor",
    "SceneModel",
    "SceneSettings",
    "SceneState",
    "SceneStatus",
    "fuse",
    "smooth_novelty",
]
