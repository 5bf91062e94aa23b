"""The WebSocket fan-out on a real event loop: bounded queues, dropping a client that stops reading, resume."""

from __future__ import annotations

import asyncio
import json

from service.live.hub import CLOSE_TOO_SLOW, LiveHub


def _msg(i: int) -> tuple[int, str]:
    return i, json.dumps({"type": "snippet", "index": i})


async def _drain(queue: asyncio.Queue) -> list:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def test_a_client_that_stops_reading_is_dropped_and_others_get_everything() -> None:
    async def scenario() -> None:
        hub = LiveHub(client_queue=4, replay=100)
        hub.open_channel("s")
        stalled = hub.subscribe("s")
        reader = hub.subscribe("s")
        received = []
        for i in range(10):
            hub.publish("s", [_msg(i)])
            received += [json.loads(t)["index"] for t in await _drain(reader.queue)]
        assert received == list(range(10))
        assert stalled.close_code == CLOSE_TOO_SLOW and hub.dropped_clients == 1
        left = await _drain(stalled.queue)
        # Its queue was replaced by one notice telling it where to resume, then the end of the subscription.
        notice = json.loads(left[0])
        assert notice["code"] == "dropped" and notice["resume_from"] == 4
        assert left[1] is None and len(left) == 2
        assert hub.subscriber_count("s") == 1

    asyncio.run(scenario())


def test_resume_since_replays_kept_messages_then_live_ones() -> None:
    async def scenario() -> None:
        hub = LiveHub(client_queue=50, replay=5)
        hub.open_channel("s")
        hub.publish("s", [_msg(i) for i in range(10)])
        sub = hub.subscribe("s", since=7)
        hub.publish("s", [_msg(10)])
        assert [json.loads(t)["index"] for t in await _drain(sub.queue)] == [7, 8, 9, 10]
        old = hub.subscribe("s", since=0)  # older than the replay keeps
        items = [json.loads(t) for t in await _drain(old.queue)]
        assert items[0]["code"] == "replay_gap" and items[0]["resume_from"] == 6
        assert [m["index"] for m in items[1:]] == [6, 7, 8, 9, 10]

    asyncio.run(scenario())


def test_removing_a_stream_ends_its_subscriptions() -> None:
    async def scenario() -> None:
        hub = LiveHub(client_queue=8, replay=8)
        hub.open_channel("s")
        sub = hub.subscribe("s")
        hub.close_stream("s")
        items = await _drain(sub.queue)
        assert json.loads(items[0])["code"] == "stream_removed" and items[1] is None
        hub.publish("s", [_msg(0)])  # late results of a removed stream go nowhere
        assert hub.subscriber_count("s") == 0

    asyncio.run(scenario())
