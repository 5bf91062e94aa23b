"""One camera's scene model: its own normal, learned from its own footage without labels, and a calibrated
novelty score for every snippet.

Lifecycle: `learning` (footage is collected) until `learn_s` seconds are in, then `calibrated` (snippets get a
`scene_score`); `none` is a camera without a model. Learning and scoring take region descriptors
(`model.scene.descriptor`, `[S, R, d]`), so the same footage gives the same scores offline and live.

Novelty, calibrated on the bank itself (leave-out distances, as conformal anomaly detection does: Laxhammar &
Falkman, "Inductive conformal anomaly detection", 2015; kNN distances as in PatchCore, Roth et al., CVPR 2022):

1. each region vector (descriptor / per-feature scale, then the region's position times `position_weight`) gets
   the mean distance to its `k` nearest bank vectors;
2. leave-out: the bank's snippets, in the order learned, are cut into `FOLDS` contiguous quarters, and each is
   measured against the other three (neighbouring snippets are near copies of each other, so leaving out one
   snippet would call everything familiar);
3. the region's scale c_r is the `quantile` of its leave-out distances, at least `region_floor` times the median
   region's; a snippet's novelty is n = max over regions of d_r / c_r;
4. the reference n_ref is `margin` times the `quantile` of the leave-out snippets' novelty;
5. a snippet's novelty is averaged with its neighbours' (`smooth_novelty`: the snippets up to `smoothing_radius`
   before and after it that exist), and `scene_score = n / (n + n_ref)`: 0.5 at n_ref, 0.67 at twice it, the
   same rarity on every camera whatever its distances are in absolute terms.

The average (step 5) is the temporal smoothing of frame scores that video anomaly detection applies as a rule
(e.g. Hasan et al., CVPR 2016; Georgescu et al., CVPR 2021): a single snippet's 1-NN distance is noisy, while an
anomaly lasts more than 1.6 s. Radius 1 is what live can give without delay: a snippet's final score is sent one
snippet later anyway (the head's provisional/final cycle), so the final scene score sees the next snippet too and
equals the offline one; the provisional score averages the snippets up to the newest (`NoveltySmoother`). The
reference stays the unsmoothed leave-out's, which the average can only lower. bench.scene_cv: weak CV AUC 0.905
-> 0.940, false alarms on other cameras 1.9 % -> 0 % (model card, "Scene model").

The margin (3) is there because new footage of a camera is rarer than its bank's own leave-out: with margin 1,
9 % of Ped2's held-out normal clips and 26 % of other cameras' second halves scored >= 0.5 (bench.scene_cv). With
it, <= 2 % did on the cross-validation footage; the model card's "Scene model" section has the figures.
"""

from __future__ import annotations

import io
import json
import time
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.neighbors import NearestNeighbors

from model.scene.bank import MemoryBank
from model.scene.descriptor import DIM, REGIONS, VERSION, region_positions

SceneState = Literal["none", "learning", "calibrated"]
FOLDS = 4
MAX_CALIBRATION_SNIPPETS = 512  # leave-out queries per calibration (a sample beyond that)
FORMAT = 1


class SceneSettings(BaseModel):
    """How a camera learns its normal (`REFINEVAD_SCENE_*` in the service)."""

    model_config = ConfigDict(frozen=True)

    learn_s: float = Field(
        300.0,
        gt=0,
        description="seconds of footage learned before the scene is calibrated: 5 minutes see the ordinary "
        "traffic of a view (people crossing, doors, lights) several times over, while a new camera is useful "
        "the same day; uploaded normal footage counts",
    )
    max_vectors: int = Field(
        400_000, ge=REGIONS, description="bound of the memory bank (region vectors; 33 floats each)"
    )
    position_weight: float = Field(
        5.0, gt=0, description="weight of a region's position against its standardised descriptor"
    )
    neighbours: int = Field(1, ge=1, description="k of the k-nearest-neighbour distance")
    quantile: float = Field(0.99, gt=0.5, lt=1.0, description="leave-out quantile of the calibration")
    scale_floor: float = Field(
        0.05,
        gt=0,
        description="smallest per-feature scale (keeps a feature that never varied from dominating)",
    )
    region_floor: float = Field(
        2.0,
        gt=0,
        description="smallest region scale, in units of the median region's: a region where nothing ever moved "
        "would otherwise call any flicker there novel (bench.scene_cv: lower floors rank Ped2 better and fire on "
        "other cameras' normal footage)",
    )
    margin: float = Field(
        3.0,
        gt=0,
        description="the novelty reference is this many times the leave-out quantile: new footage of the same "
        "camera is rarer than the bank's own leave-out (bench.scene_cv: the least margin with <= 2 % of normal "
        "held-out snippets at 0.5)",
    )
    adapt_below: float = Field(
        0.3, ge=0, le=1, description="continuous adaptation: only snippets whose fused score stays below this"
    )
    adapt_delay: int = Field(
        16, ge=1, description="snippets a snippet waits before it may join, so an anomaly's onset cannot"
    )
    recalibrate_growth: float = Field(
        0.25, gt=0, description="recalibrate once the bank has this much more footage than at calibration"
    )
    smoothing_radius: int = Field(
        1,
        ge=0,
        le=1,
        description="snippets before and after a snippet whose novelty its own is averaged with (0: none); at "
        "most 1, the one snippet live waits before a score is final",
    )


class SceneStatus(BaseModel):
    state: SceneState
    snippets_learned: int = Field(description="snippets of footage learned (learning and adaptation)")
    footage_s: float = Field(description="seconds of footage learned")
    learn_s: float = Field(description="seconds needed before the scene is calibrated")
    progress: float = Field(description="learning progress 0-1 (1 once calibrated)")
    bank_vectors: int
    bank_snippets: int
    bank_bytes: int
    pinned_snippets: int = Field(description="false alarms an operator marked (never dropped from the bank)")
    threshold: float | None = Field(
        description="novelty reference n_ref (leave-out quantile): a snippet at it scores 0.5; null while learning"
    )
    descriptor: str = VERSION
    updated_at: float | None = Field(
        description="wall-clock time of the last change (seconds since the epoch)"
    )


def smooth_novelty(novelty: np.ndarray, radius: int) -> np.ndarray:
    """`[S]` novelty of consecutive snippets -> `[S]` float64: each the mean of the snippets within `radius` of it
    that exist (fewer at the ends; radius 0 returns the input)."""
    n = np.asarray(novelty, np.float64)
    if radius <= 0 or len(n) < 2:
        return n
    total = np.concatenate([[0.0], np.cumsum(n)])
    i = np.arange(len(n))
    lo, hi = np.maximum(0, i - radius), np.minimum(len(n), i + radius + 1)
    return (total[hi] - total[lo]) / (hi - lo)


class NoveltySmoother:
    """`smooth_novelty` one snippet at a time, as live scores them: `push` the newest snippet's novelty (None: no
    novelty, e.g. the scene was forgotten, which ends the run) and get the provisional value of the newest (the mean up
    to it) and the final value of the one before it (now that its next neighbour is known), or None. Radius <= 1;
    the final values equal `smooth_novelty` over the whole run."""

    def __init__(self, radius: int) -> None:
        if radius not in (0, 1):
            raise ValueError(f"live smoothing needs radius 0 or 1, got {radius}")
        self.radius = radius
        self._recent: list[float] = []  # the run's last two novelties, oldest first

    def push(self, novelty: float | None) -> tuple[float | None, float | None]:
        """-> (provisional value of the newest, final value of the one before it); Nones where there is none."""
        if novelty is None:
            # The run ends here: the snippet before gets the value offline gives a run's last snippet.
            before, self._recent = self._recent, []
            return None, (float(np.mean(before)) if before and self.radius else None)
        if self.radius == 0:
            return float(novelty), None
        before = self._recent
        final = float(np.mean([*before[-2:], novelty])) if before else None
        self._recent = [*before[-1:], float(novelty)]
        return float(np.mean(self._recent)), final


class SceneModel:
    """A camera's memory bank of normal region descriptors and its calibration."""

    def __init__(self, settings: SceneSettings | None = None, geometry: dict[str, int] | None = None) -> None:
        self.settings = settings or SceneSettings()
        self.geometry = dict(geometry or {})
        self.positions = region_positions()
        self.footage_s = 0.0
        self.snippets_learned = 0
        self.pinned = 0
        self.updated_at: float | None = None
        # Learning: raw descriptors until calibration fixes the feature scale.
        self._pending: list[np.ndarray] = []
        self._pending_pinned: list[np.ndarray] = []
        self.feature_scale: np.ndarray | None = None
        self.bank: MemoryBank | None = None
        self.region_scale: np.ndarray | None = None
        self.reference: float | None = None
        self._calibrated_snippets = 0

    # -- state --------------------------------------------------------------------------------------------
    @property
    def state(self) -> SceneState:
        return "calibrated" if self.reference is not None else "learning"

    def status(self) -> SceneStatus:
        bank = self.bank
        s = self.settings
        calibrated = self.state == "calibrated"
        return SceneStatus(
            state=self.state,
            snippets_learned=self.snippets_learned,
            footage_s=round(self.footage_s, 3),
            learn_s=s.learn_s,
            progress=1.0 if calibrated else min(1.0, self.footage_s / s.learn_s),
            bank_vectors=len(bank) if bank else sum(len(p) * REGIONS for p in self._pending),
            bank_snippets=bank.snippets if bank else sum(len(p) for p in self._pending),
            bank_bytes=bank.nbytes if bank else sum(p.nbytes for p in self._pending),
            pinned_snippets=self.pinned,
            threshold=self.reference,
            updated_at=self.updated_at,
        )

    def _check(self, descriptors: np.ndarray) -> np.ndarray:
        descriptors = np.asarray(descriptors, np.float32)
        if descriptors.ndim != 3 or descriptors.shape[1:] != (REGIONS, DIM):
            raise ValueError(f"expected [S, {REGIONS}, {DIM}] descriptors, got {list(descriptors.shape)}")
        return descriptors

    def _vectors(self, descriptors: np.ndarray) -> np.ndarray:
        assert self.feature_scale is not None
        s = len(descriptors)
        where = np.broadcast_to(self.positions * self.settings.position_weight, (s, REGIONS, 2))
        return np.concatenate([descriptors / self.feature_scale, where], axis=-1).astype(np.float32)

    # -- learning -----------------------------------------------------------------------------------------
    def learn(self, descriptors: np.ndarray, seconds: float, pinned: bool = False) -> bool:
        """Learn snippets `[S, R, d]` of normal footage lasting `seconds`. Calibrates (or recalibrates, once the
        bank grew by `recalibrate_growth`) when due. Returns True when the calibration changed."""
        descriptors = self._check(descriptors)
        if not len(descriptors):
            return False
        self.updated_at = time.time()
        if pinned:
            self.pinned += len(descriptors)
        else:
            self.footage_s += float(seconds)
            self.snippets_learned += len(descriptors)
        if self.bank is None:
            (self._pending_pinned if pinned else self._pending).append(descriptors)
            if self.footage_s >= self.settings.learn_s and self._pending:
                self._calibrate_first()
                return True
            return False
        self.bank.add(self._vectors(descriptors), pinned=pinned)
        if self.bank.snippets >= (1 + self.settings.recalibrate_growth) * self._calibrated_snippets:
            self.calibrate()
            return True
        return False

    def mark_normal(self, descriptors: np.ndarray) -> None:
        """An operator's false alarm: its snippets join the bank at once and are never dropped, so the same
        footage does not fire again (the calibration is not refit: one snippet must not move the threshold)."""
        self.learn(descriptors, 0.0, pinned=True)

    def _calibrate_first(self) -> None:
        normal = np.concatenate(self._pending)
        s = self.settings
        self.feature_scale = np.maximum(normal.reshape(-1, DIM).std(axis=0), s.scale_floor).astype(np.float32)
        self.bank = MemoryBank(DIM + 2, s.max_vectors)
        for part in self._pending:
            self.bank.add(self._vectors(part))
        for part in self._pending_pinned:
            self.bank.add(self._vectors(part), pinned=True)
        self._pending, self._pending_pinned = [], []
        self.calibrate()

    def calibrate(self) -> None:
        """Fit the region scales and the novelty reference on the bank's leave-out distances (module docstring).
        Needs at least 2 snippets in the bank; raises `ValueError` otherwise."""
        assert self.bank is not None
        bank, s = self.bank, self.settings
        numbers = np.unique(bank.groups)
        if len(numbers) < 2:
            raise ValueError("a scene needs at least 2 snippets of footage to calibrate")
        rank = np.searchsorted(numbers, bank.groups)
        # Contiguous quarters of the footage: a held-out quarter is other footage, as new snippets are, not
        # near copies of its neighbours in the bank.
        fold = (rank * FOLDS) // len(numbers)
        # A bounded, fixed sample of query snippets per calibration.
        step = max(1, len(numbers) // MAX_CALIBRATION_SNIPPETS)
        queried = np.isin(rank % step, [0])
        d = np.full(len(bank), np.nan, np.float32)
        for f in np.unique(fold):
            rest = fold != f
            if not rest.any():
                continue
            query = np.flatnonzero((fold == f) & queried)
            index = NearestNeighbors(n_neighbors=min(s.neighbours, int(rest.sum())), algorithm="kd_tree")
            index.fit(bank.vectors[rest])
            d[query] = index.kneighbors(bank.vectors[query])[0].mean(axis=1)
        measured = ~np.isnan(d)
        regions = bank.regions[measured]
        per_region = np.array(
            [
                np.quantile(d[measured][regions == r], s.quantile) if (regions == r).any() else np.nan
                for r in range(REGIONS)
            ]
        )
        floor = max(1e-6, s.region_floor * float(np.nanmedian(per_region)))
        self.region_scale = np.maximum(np.nan_to_num(per_region, nan=floor), floor).astype(np.float32)
        ratio = d[measured] / self.region_scale[regions]
        snippet = rank[measured]
        novelty = np.full(snippet.max() + 1, -np.inf)
        np.maximum.at(novelty, snippet, ratio)
        novelty = novelty[np.isfinite(novelty)]
        self.reference = max(s.margin * float(np.quantile(novelty, s.quantile)), 1e-6)
        self._calibrated_snippets = bank.snippets
        self.updated_at = time.time()

    # -- scoring ------------------------------------------------------------------------------------------
    def novelty(self, descriptors: np.ndarray) -> np.ndarray:
        """`[S, R, d]` -> `[S]` novelty n (module docstring). Raises `ValueError` while learning."""
        descriptors = self._check(descriptors)
        if self.bank is None or self.region_scale is None:
            raise ValueError("the scene is still learning: no novelty yet")
        if not len(descriptors):
            return np.zeros(0, np.float32)
        vectors = self._vectors(descriptors).reshape(-1, DIM + 2)
        d = self.bank.distances(vectors, self.settings.neighbours).reshape(len(descriptors), REGIONS)
        return (d / self.region_scale).max(axis=1)

    def score(self, descriptors: np.ndarray) -> np.ndarray | None:
        """Consecutive snippets `[S, R, d]` (one video, in order) -> `[S]` scene scores in [0, 1) of their
        smoothed novelty (module docstring, step 5), or None while learning."""
        if self.state != "calibrated":
            return None
        return self.score_novelty(smooth_novelty(self.novelty(descriptors), self.settings.smoothing_radius))

    def score_novelty(self, novelty: np.ndarray) -> np.ndarray:
        """Novelty `[S]` (smoothed or not) -> scene scores `[S]` in [0, 1). Raises `ValueError` while learning."""
        if self.reference is None:
            raise ValueError("the scene is still learning: no scene score yet")
        n = np.asarray(novelty, np.float64)
        return (n / (n + self.reference)).astype(np.float32)

    # -- persistence --------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        meta = {
            "format": FORMAT,
            "descriptor": VERSION,
            "settings": self.settings.model_dump(),
            "geometry": self.geometry,
            "footage_s": self.footage_s,
            "snippets_learned": self.snippets_learned,
            "pinned": self.pinned,
            "updated_at": self.updated_at,
            "reference": self.reference,
            "calibrated_snippets": self._calibrated_snippets,
        }
        arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
        if self.bank is not None:
            arrays |= {f"bank_{k}": v for k, v in self.bank.state().items()}
            assert self.feature_scale is not None and self.region_scale is not None
            arrays |= {"feature_scale": self.feature_scale, "region_scale": self.region_scale}
        for name, parts in (("pending", self._pending), ("pending_pinned", self._pending_pinned)):
            arrays[name] = np.concatenate(parts) if parts else np.zeros((0, REGIONS, DIM), np.float32)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, settings: SceneSettings | None = None) -> SceneModel:
        """Load what `to_bytes` wrote. `settings` (the service's) replace the stored ones except what the bank
        was built with (position weight, feature scale floor). Raises `ValueError` for another descriptor."""
        with np.load(io.BytesIO(data)) as stored:
            arrays = {k: stored[k] for k in stored.files}
        meta = json.loads(arrays["meta"].tobytes().decode())
        if meta.get("descriptor") != VERSION or meta.get("format") != FORMAT:
            raise ValueError(
                f"scene model of descriptor {meta.get('descriptor')!r} (format {meta.get('format')}); this "
                f"release reads {VERSION!r} (format {FORMAT}): forget the scene and let it learn again"
            )
        built = SceneSettings.model_validate(meta["settings"])
        if settings is not None:
            keep = {"position_weight": built.position_weight, "scale_floor": built.scale_floor}
            built = settings.model_copy(update=keep)
        model = cls(built, meta["geometry"])
        model.footage_s, model.snippets_learned = meta["footage_s"], meta["snippets_learned"]
        model.pinned, model.updated_at, model.reference = (
            meta["pinned"],
            meta["updated_at"],
            meta["reference"],
        )
        model._calibrated_snippets = meta["calibrated_snippets"]
        if "bank_vectors" in arrays:
            state = {k.removeprefix("bank_"): v for k, v in arrays.items() if k.startswith("bank_")}
            model.bank = MemoryBank.from_state(state, built.max_vectors)
            model.feature_scale, model.region_scale = arrays["feature_scale"], arrays["region_scale"]
        model._pending = [arrays["pending"]] if len(arrays["pending"]) else []
        model._pending_pinned = [arrays["pending_pinned"]] if len(arrays["pending_pinned"]) else []
        return model
