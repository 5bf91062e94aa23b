"""Issue 26 item 5, against the real service: with `v3` loaded, a real CCTV fight replayed as a live stream is named
`Fighting` in the live category distribution within 2 snippets of its start (surv-fight clips are cut to the
fight, so its start is the clip's). The clip is one of v3's training clips (all of surv-fight is): this checks the
live path (window, provisional and final scores, categories over the WebSocket), not accuracy, which is in the
model card (`python -m bench.fight_cv`)."""

from __future__ import annotations

import csv

import pytest
from websockets.sync.client import connect

from tests.service.live.service_process import API_KEY, ServiceProcess, next_snippets
from tests.shared_data import SURV_FIGHT_ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not SURV_FIGHT_ROOT.is_dir(), reason="surv-fight is not beside the checkout"),
]


def _fight_clip() -> str:
    with (SURV_FIGHT_ROOT / "clips.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    # The first source (sorted) with a fight and a calm clip, as in tests/model/test_v3_model.py.
    sources: dict[str, set[str]] = {}
    for row in rows:
        sources.setdefault(row["source"], set()).add(row["fight"])
    source = next(s for s in sorted(sources) if {"0", "1"} <= sources[s])
    return str(SURV_FIGHT_ROOT / next(r["file"] for r in rows if r["source"] == source and r["fight"] == "1"))


def test_a_replayed_fight_is_named_fighting_within_two_snippets(tmp_path) -> None:
    service = ServiceProcess(
        tmp_path / "data", tmp_path / "service.log", model_checkpoint="v3", scene_models=False
    ).start()
    try:
        with service.client() as client:
            # Looped: the clip is a few seconds long; the first two snippets are its start.
            body = {"url": _fight_clip(), "name": "yard", "loop": True}
            created = client.post("/streams", json=body)
            assert created.status_code == 201, created.text
            sid = created.json()["id"]
        with connect(
            f"{service.ws_base}/streams/{sid}/live", additional_headers={"X-API-Key": API_KEY}
        ) as ws:
            first_two = [m for m in next_snippets(ws, 4, timeout=90) if m["index"] < 2]
        assert {m["index"] for m in first_two} == {0, 1}, first_two
        named = [(m["index"], m["status"], m["dominant_category"]) for m in first_two]
        assert any(category == "Fighting" for _, _, category in named), named
        assert all("Fighting" in m["categories"] for m in first_two)
    finally:
        service.stop()
