"""Device-side sliding windows: chronological order, ring wrap-around, slot reuse and growth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.live.window import FeatureWindows


def test_windows_hold_the_last_w_features_in_order_per_stream() -> None:
    torch.manual_seed(0)
    w, d, steps = 5, 3, 12
    windows = FeatureWindows(w, d, torch.device("cpu"), capacity=2)
    a, b = windows.acquire(), windows.acquire()
    feats = torch.randn(steps, 2, d)
    for t in range(steps):
        counts = windows.append(np.array([a, b]), feats[t])
        n = min(t + 1, w)
        assert counts.tolist() == [n, n]
        got = windows.gather(np.array([a, b]), n)  # [2, n, d]
        expected = feats[t + 1 - n : t + 1].transpose(0, 1)
        assert torch.equal(got, expected)
    # Shorter reads are the newest entries.
    assert torch.equal(windows.gather(np.array([b]), 2)[0], feats[steps - 2 :, 1])


def test_slots_are_recycled_and_the_pool_grows_only_when_full() -> None:
    windows = FeatureWindows(4, 2, torch.device("cpu"), capacity=2)
    for _ in range(50):  # churn: add and remove streams
        slot = windows.acquire()
        windows.append(np.array([slot]), torch.ones(1, 2))
        windows.release(slot)
    assert windows.capacity == 2 and windows.in_use == 0
    slots = [windows.acquire() for _ in range(3)]
    assert windows.capacity == 4 and len(set(slots)) == 3
    fresh = slots[0]
    assert windows.count(fresh) == 0  # a recycled slot starts empty


def test_rate_meter_counts_batched_arrivals_at_their_true_rate() -> None:
    from service.live.readers import RateMeter

    meter = RateMeter(horizon_s=5.0)
    for k in range(6):  # 16 frames every 1.6 s = 10 fps
        meter.add(16, now=100.0 + 1.6 * k)
    assert meter.rate(now=100.0 + 1.6 * 5 + 1.0) == pytest.approx(10.0)
    assert meter.rate(now=200.0) == 0.0  # silent for longer than the horizon
