"""Event-media soak: the real service under stream add/remove churn where every stream raises an event (snapshot
and clip each), with a small media budget, for N minutes. Resident memory, descriptors, threads and the size of the
media directory are sampled all along.

Run from the repository root::

    .venv/bin/python -m bench.media_soak --minutes 10 --out media_soak.json

Passes (exit 0) when the media directory never grew past the budget plus one retention interval's worth
(`--slack-mb`), retention removed old media (some events' media expired) while recent events kept theirs, resident
memory is back within `--max-rss-growth` MB of the warm-up reference once the churn stops and (for runs of 3 minutes
or more) grew by less than `--max-rss-slope` MB per minute over the second half (least-squares), and descriptors
and threads are back where they were after the warm-up. The summary is printed and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.soak import rss_slope_mb_per_min, settle_process  # noqa: E402

log = logging.getLogger("bench.media_soak")

# Thresholds of 0: every score is an anomaly, so every stream opens an event at its first final score.
ALWAYS = {"enter_threshold": 0.0, "exit_threshold": 0.0, "min_duration_s": 0.0}


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.glob("*") if p.is_file()) / 2**20 if path.is_dir() else 0.0


def media_soak(
    minutes: float, streams: int, hold_s: float, budget_mb: float, sample_s: float, model: str | None = None
) -> dict:
    """`model`: a checkpoint path or shipped model name for the service (None = the shipped default)."""
    from tests.footage import PED2_ROOT
    from tests.reliability.conftest import LIVE_ENV, proc_stats
    from tests.service.conftest import ServerProcess

    clips = [str(PED2_ROOT / "testing" / "frames" / f"{i:02d}") for i in range(1, 13)]
    env = {
        **LIVE_ENV,
        "REFINEVAD_MEDIA_MAX_TOTAL_MB": str(budget_mb),
        "REFINEVAD_MEDIA_RETENTION_INTERVAL_S": "2",
        "REFINEVAD_MEDIA_RING_MB": "8",
        "REFINEVAD_MEDIA_PRE_ROLL_S": "1",
        "REFINEVAD_MEDIA_POST_ROLL_S": "1",
        # Churned streams live a few seconds: let their events open from the first snippet (the soak measures
        # media, not the rule that waits for the scene check's 8 snippets).
        "REFINEVAD_SCENE_CHECK_MIN_SNIPPETS": "1",
    }
    if model is not None:
        env["REFINEVAD_MODEL_CHECKPOINT"] = model
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        server = ServerProcess(data, env=env).start()
        pid = server.proc.pid  # type: ignore[union-attr]
        media_dir = data / "media"
        samples: list[dict] = []
        rounds = 0
        try:
            with server.client() as client:

                def churn_round(k: int) -> None:
                    ids = [
                        client.post(
                            "/streams",
                            json={
                                "url": clips[(k * streams + i) % len(clips)],
                                "name": f"cam {i}",
                                "events": ALWAYS,
                            },
                        ).json()["id"]
                        for i in range(streams)
                    ]
                    time.sleep(hold_s)  # long enough for each stream's first final score: an event with media
                    for sid in ids:
                        client.delete(f"/streams/{sid}")

                for k in range(2):  # warm-up: first allocations, encoder set-up, thread stacks
                    churn_round(k)
                reference = settle_process(pid)
                log.info("reference after warm-up: %s", reference)
                started = time.monotonic()
                end = started + minutes * 60
                next_sample = started
                while time.monotonic() < end:
                    churn_round(rounds)
                    rounds += 1
                    now = time.monotonic()
                    if now >= next_sample:
                        stats = proc_stats(pid)
                        sample = {
                            "t_s": round(now - started, 1),
                            **stats.__dict__,
                            "media_mb": round(_dir_mb(media_dir), 3),
                            "rounds": rounds,
                        }
                        samples.append(sample)
                        log.info("t=%5.0fs %s", now - started, sample)
                        next_sample = now + sample_s
                time.sleep(6.0)  # the last clips finish (post-roll) and retention runs
                final = settle_process(pid)
                events = client.get("/events", params={"source": "stream", "limit": 1000}).json()
        finally:
            server.stop()
    statuses: dict[str, int] = {}
    for event in events["items"]:
        statuses[str(event["clip_status"])] = statuses.get(str(event["clip_status"]), 0) + 1
    newest = events["items"][:streams]  # the last round's events
    return {
        "minutes": minutes,
        "streams_per_round": streams,
        "rounds": rounds,
        "events": events["total"],
        "clip_statuses": statuses,
        "newest_have_media": all(e["snapshot_url"] and e["clip_status"] == "ready" for e in newest),
        "media_budget_mb": budget_mb,
        "media_max_mb": max((s["media_mb"] for s in samples), default=0.0),
        "reference": reference,
        "final": final,
        "rss_slope_mb_per_min": round(rss_slope_mb_per_min(samples), 3),
        "samples": samples,
    }


def verdict(result: dict, slack_mb: float, max_rss_slope: float, max_rss_growth: float) -> dict[str, bool]:
    ref, fin = result["reference"], result["final"]
    return {
        "rss_back": fin["rss_mb"] <= ref["rss_mb"] + max_rss_growth,
        "media_within_budget": result["media_max_mb"] <= result["media_budget_mb"] + slack_mb,
        "retention_removed_old_media": result["clip_statuses"].get("expired", 0) > 0,
        "newest_events_have_media": result["newest_have_media"],
        # A slope over a minute or two of samples is mostly allocator noise.
        "rss_flat": result["minutes"] < 3 or result["rss_slope_mb_per_min"] < max_rss_slope,
        "fds_flat": fin["fds"] <= ref["fds"] + 2,
        "threads_flat": fin["threads"] <= ref["threads"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--streams", type=int, default=3, help="streams added and removed per round")
    parser.add_argument("--hold-s", type=float, default=5.0, help="seconds each round's streams run")
    parser.add_argument("--budget-mb", type=float, default=3.0, help="REFINEVAD_MEDIA_MAX_TOTAL_MB")
    parser.add_argument(
        "--slack-mb", type=float, default=1.0, help="allowed over the budget between two runs"
    )
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--max-rss-slope", type=float, default=2.0, help="MB per minute allowed")
    parser.add_argument("--max-rss-growth", type=float, default=40.0, help="MB over the reference at the end")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result = media_soak(args.minutes, args.streams, args.hold_s, args.budget_mb, args.sample_s)
    result["verdict"] = verdict(result, args.slack_mb, args.max_rss_slope, args.max_rss_growth)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    return 0 if all(result["verdict"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
