"""Where the shared real data lies: `../shared/data` beside the checkout (as on developer machines and in CI),
or REFINEVAD_SHARED_DATA. Read in place, never copied into the project."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = Path(
    os.environ.get("REFINEVAD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
PED2_ROOT = SHARED_DATA / "ped2"
UCF_CRIME_ROOT = SHARED_DATA / "ucf-crime"
FIELD_ROOT = SHARED_DATA / "field"
SURV_FIGHT_ROOT = SHARED_DATA / "surv-fight"
