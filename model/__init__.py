"""RefineVAD: weakly supervised video anomaly detection (MoTAR + CORE)."""

from model.config import UCF_CRIME_CATEGORIES, RefineVADConfig
from model.ensemble import RefineVADEnsemble
from model.refinevad import RefineVAD, RefineVADOutput
from model.shift import adaptive_temporal_shift

__all__ = [
    "UCF_CRIME_CATEGORIES",
    "RefineVAD",
    "RefineVADConfig",
    "RefineVADEnsemble",
    "RefineVADOutput",
    "adaptive_temporal_shift",
]
