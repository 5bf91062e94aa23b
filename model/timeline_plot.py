"""A PNG of one analysis: the score timeline with detected events shaded, and the category bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from model.inference import AnalysisResult


def plot_analysis(result: AnalysisResult, path: Path, title: str | None = None) -> Path:
    starts = np.array([s.start_s for s in result.snippets])
    ends = np.array([s.end_s for s in result.snippets])
    scores = np.array([s.score for s in result.snippets])
    fig, (ax, bars) = plt.subplots(
        1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [3, 1]}, constrained_layout=True
    )
    ax.step(np.r_[starts, ends[-1:]], np.r_[scores, scores[-1:]], where="post", color="#c0392b", lw=1.6)
    for event in result.events:
        ax.axvspan(event.start_s, event.end_s, color="#f5b041", alpha=0.35, lw=0)
        ax.text(event.start_s, 1.02, event.dominant_category or "", fontsize=8, va="bottom")
    ax.set(xlim=(0, ends[-1]), ylim=(0, 1.1), xlabel="time (s)", ylabel="anomaly score")
    ax.set_title(title or "anomaly score", fontsize=10)
    if result.untrained_warning:
        ax.text(0.5, 0.5, "UNTRAINED MODEL", transform=ax.transAxes, ha="center", color="grey", alpha=0.6)
    names = list(result.video_categories)
    values = [result.video_categories[n] for n in names]
    bars.barh(names, values, color="#2e86c1")
    bars.set(xlim=(0, 1), xlabel="category share")
    bars.invert_yaxis()
    bars.tick_params(axis="y", labelsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
