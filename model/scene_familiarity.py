"""Scene familiarity: does a camera's footage look like the footage a head was trained on?

A weakly supervised head learns "unlike the training normals" as "anomalous". Footage from a camera it never saw
is unlike every training clip, so such a head scores it high throughout (the shipped Ped2 model calls every
snippet of an unseen hall or street an anomaly). That is no evidence of an anomaly, and this check says so.

The statistic is a diagonal Mahalanobis distance in the space the head reads (cf. Lee et al., NeurIPS 2018, "A
Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks", which uses the full
covariance of a classifier's features):

- snippet distance d_t = mean over channels c of ((x_tc - mu_c) / sigma_c)^2, with mu, sigma the per-channel mean
  and standard deviation of the training snippets, exactly as the head's input standardisation reads them
  (channels that never varied get sigma = 1). About 1 for a typical training snippet. A channel that barely
  varied in training weighs heavily, and rightly: the head divides by the same sigma. In the shipped Ped2 model
  three motion bins no Ped2 cell fills (sigma about 3e-5) move the head's scores on a normal clip from 0.01 to
  0.93 when they rise by 0.001; such footage is exactly what the head cannot judge.
- verdict at snippet t = the median of d over the trailing `window` snippets (32, the live window; fewer at the
  start of a video or stream), the same offline and live. The median lets an anomaly (unusual by nature) last
  part of that time without the scene being called unfamiliar; the price is that a camera turned to a new view
  is called unfamiliar only once the new view fills half the window (26 s at 10 fps), and an event may open
  before that (it then ends, `scene_unfamiliar`).

The threshold is fitted on the training clips alone (`fit_scene_familiarity`): each clip's full trailing-window
medians (the whole clip when shorter than the window) are measured with mu and sigma of the *other* clips
(leave one clip out, so a training clip is as new as a test clip from the same camera), and the threshold is
`margin` (10) times the largest of them. The margin is an order of magnitude because the check is for another
camera, not for an unusual moment of the same one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from model.refinevad import standardization_stats

STATISTIC = (
    "median over the trailing window of snippets of the mean squared per-channel z-score against the training "
    "snippets"
)
METADATA_KEY = "scene_familiarity"
DEFAULT_MARGIN = 10.0
DEFAULT_WINDOW = 32


class SceneCheck(BaseModel):
    """The verdict on a stretch of snippets."""

    familiar: bool = Field(
        description="the scene distance is within the threshold fitted on the training clips"
    )
    distance: float = Field(
        description="median over the snippets of the mean squared z-score (about 1 in domain)"
    )
    threshold: float = Field(description="largest leave-one-clip-out training distance times the margin")
    snippets: int = Field(description="how many snippets the median is over")
    unfamiliar_snippets: int | None = Field(
        default=None,
        description="whole videos: snippets whose trailing window was unfamiliar (their scores raise no events)",
    )


class SceneCalibration(BaseModel):
    """What a checkpoint stores to check scene familiarity (metadata key `scene_familiarity`)."""

    statistic: str = STATISTIC
    mean: list[float] = Field(description="per-channel mean of the training snippets [D]")
    std: list[float] = Field(description="per-channel standard deviation of the training snippets [D] (>0)")
    threshold: float = Field(gt=0)
    margin: float = Field(gt=0)
    window: int = Field(DEFAULT_WINDOW, ge=1, description="snippets of the trailing window a verdict is over")
    training_clip_distances: dict[str, float] = Field(
        description="each training clip's largest trailing-window distance against the other clips' statistics"
    )


def _moments(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, int]:
    x64 = torch.from_numpy(x).double()
    return x64.sum(0), x64.square().sum(0), len(x64)


def trailing_medians(d: torch.Tensor, window: int) -> torch.Tensor:
    """`[T]` snippet distances -> `[T]` medians over each snippet's trailing `window` (fewer at the start).

    For an even count the lower of the two middle values (torch's median), so no distance is invented."""
    t = d.shape[0]
    padded = torch.cat([d.new_full((window - 1,), float("nan")), d])
    return padded.unfold(0, window, 1)[:t].nanmedian(dim=1).values


def fit_scene_familiarity(
    names: Sequence[str],
    load: Callable[[str], np.ndarray],
    margin: float = DEFAULT_MARGIN,
    window: int = DEFAULT_WINDOW,
) -> SceneCalibration:
    """Fit the check on training clips: `load(name)` gives a clip's snippet features `[T, D]`. Two passes with
    one clip in memory at a time (per-clip sums first, then each clip against the others' statistics).

    Raises `ValueError` with fewer than 2 clips (leave-one-clip-out needs another clip), an empty clip or
    mismatched dims.
    """
    names = list(names)
    if len(names) < 2:
        raise ValueError(f"scene familiarity needs at least 2 training clips, got {len(names)}")
    moments = {}
    for name in names:
        x = load(name)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"training clip {name!r} has no snippets (shape {list(x.shape)})")
        moments[name] = _moments(x)
    dims = {m[0].shape[0] for m in moments.values()}
    if len(dims) != 1:
        raise ValueError(f"training clips have different feature dims: {sorted(dims)}")
    total = sum(m[0] for m in moments.values())
    total_sq = sum(m[1] for m in moments.values())
    count = sum(m[2] for m in moments.values())
    distances = {}
    for name in names:
        s, sq, n = moments[name]
        if count - n < 2:
            raise ValueError(f"leaving out clip {name!r} leaves fewer than 2 training snippets")
        # The head's own standardisation of the other clips: the check reads the sigma the head divides by.
        mean, std = standardization_stats(total - s, total_sq - sq, count - n)
        d = ((torch.from_numpy(load(name)).double() - mean) / std).square().mean(dim=1)
        # Full windows only (the whole clip when it is shorter): a stream's first, shorter windows are a
        # start-up transient, and the few snippets of one could put a close-up anomaly above the median.
        full = min(len(d), window) - 1
        distances[name] = float(trailing_medians(d, window)[full:].max())
    mean, std = standardization_stats(total, total_sq, count)
    return SceneCalibration(
        mean=mean.tolist(),
        std=std.tolist(),
        threshold=margin * max(distances.values()),
        margin=margin,
        window=window,
        training_clip_distances=distances,
    )


class SceneFamiliarity:
    """Checks snippet features against a `SceneCalibration`, on the features' device, batched."""

    def __init__(self, calibration: SceneCalibration, device: torch.device | str = "cpu") -> None:
        self.calibration = calibration
        self.threshold = calibration.threshold
        self.window = calibration.window
        self._mean = torch.tensor(calibration.mean, dtype=torch.float32, device=device)
        self._std = torch.tensor(calibration.std, dtype=torch.float32, device=device)

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, Any], device: torch.device | str = "cpu"
    ) -> SceneFamiliarity | None:
        """None when the checkpoint carries no calibration (trained before this check existed)."""
        stored = metadata.get(METADATA_KEY)
        return None if stored is None else cls(SceneCalibration.model_validate(stored), device)

    @property
    def dim(self) -> int:
        return self._mean.numel()

    def snippet_distances(self, features: torch.Tensor) -> torch.Tensor:
        """`[..., T, D]` features -> `[..., T]` snippet distances d_t (float32)."""
        z = (features.float() - self._mean) / self._std
        return z.square().mean(dim=-1)

    def distances(self, windows: torch.Tensor) -> torch.Tensor:
        """The verdict distance at the last snippet of each window: `[..., T, D]` -> `[...]`."""
        return self.median_at(self.snippet_distances(windows[..., -self.window :, :]))

    def median_at(self, d: torch.Tensor, before_last: int = 0) -> torch.Tensor:
        """Verdict distances from snippet distances `[..., T]`: the median of the `window` snippets that end
        `before_last` snippets before the last (0: at the last snippet) -> `[...]`. Needs T > before_last."""
        end = d.shape[-1] - before_last
        return d[..., max(0, end - self.window) : end].median(dim=-1).values

    def verdict(self, distance: float, snippets: int) -> SceneCheck:
        """The verdict on a scene distance from `distances`, measured over `snippets` snippets."""
        return SceneCheck(
            familiar=distance <= self.threshold,
            distance=distance,
            threshold=self.threshold,
            snippets=snippets,
        )

    def check_video(self, features: torch.Tensor) -> tuple[SceneCheck, np.ndarray]:
        """A whole video, `[T, D]`: the summary (median over all its snippets, and how many snippets had an
        unfamiliar trailing window) and the per-snippet familiar mask `[T]` bool, as live would judge each
        snippet from the start of a stream. Raises `ValueError` for no snippets or another dim."""
        if features.dim() != 2 or features.shape[0] == 0 or features.shape[1] != self.dim:
            raise ValueError(f"expected [T>0, {self.dim}] features, got {list(features.shape)}")
        d = self.snippet_distances(features)
        familiar = (trailing_medians(d, self.window) <= self.threshold).cpu().numpy()
        summary = self.verdict(float(d.median()), int(features.shape[0]))
        summary.unfamiliar_snippets = int((~familiar).sum())
        return summary, familiar
