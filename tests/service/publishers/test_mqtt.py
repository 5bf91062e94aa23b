"""MQTT against a real Mosquitto broker: the service announces itself (retained, with a last will), publishes event
start/update/end with the stream's name and media URLs, and rate-limited retained scores; it keeps scoring while the
broker is down and reconnects when it is back; credentials never reach the log. Plus the publisher alone: bad URLs
are clear errors, and publishing with no broker never blocks."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from service.live.messages import EventNotice
from service.publishers.base import EventChanged
from service.publishers.mqtt import BrokerAddress, InvalidMqttUrl, MqttPublisher
from tests.footage import PED2_ROOT
from tests.mqtt_broker import MosquittoProcess, mosquitto_available
from tests.rtsp_server import free_port
from tests.service.live.service_process import ServiceProcess

CLIP = str(PED2_ROOT / "testing" / "frames" / "02")
USER, PASSWORD = "nvr-operator", "s3cr3t-Pa55"


class Subscriber:
    """A paho client that records every message under `refinevad/#`, retained ones included."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes, bool, float]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-subscriber")
        self.client.username_pw_set(USER, PASSWORD)
        self.client.on_connect = lambda c, *_: c.subscribe("refinevad/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain), time.monotonic()))

    def on(self, topic: str) -> list[tuple[bytes, bool, float]]:
        with self._lock:
            return [(p, r, t) for tp, p, r, t in self.messages if tp == topic]

    def wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        with self._lock:
            topics = sorted({m[0] for m in self.messages})
        raise AssertionError(f"timed out waiting for {what}; topics seen: {topics}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_broker_urls_are_parsed_and_bad_ones_refused_without_their_password() -> None:
    address = BrokerAddress.parse("mqtts://user:p%40ss@broker.example:8884")
    assert (address.host, address.port, address.tls, address.username, address.password) == (
        "broker.example",
        8884,
        True,
        "user",
        "p@ss",
    )
    assert (
        BrokerAddress.parse("mqtt://host").port == 1883 and BrokerAddress.parse("mqtts://host").port == 8883
    )
    assert "p%40ss" not in address.display and "user" not in address.display
    for bad in ("http://user:topsecret@host", "mqtt://user:topsecret@", "mqtt://user:topsecret@host:99999"):
        with pytest.raises(InvalidMqttUrl) as info:
            BrokerAddress.parse(bad)
        assert "topsecret" not in str(info.value)


def test_publishing_with_no_broker_never_blocks_and_stays_bounded() -> None:
    # Nothing listens on this port: paho keeps retrying in its own thread while the pipeline publishes on.
    publisher = MqttPublisher(f"mqtt://u:p@127.0.0.1:{free_port()}", reconnect_max_s=1)
    publisher.start()
    try:
        notice = EventNotice(type="start", event_id=1, start_s=0.0, started_at=0.0, peak_score=0.9)
        for i in range(5000):
            publisher.publish(EventChanged(f"s{i % 7}", "cam", notice))
        # The outbox is bounded: what did not fit was dropped and counted.
        assert len(publisher._outbox) <= 1000
        time.sleep(0.5)
        assert publisher.dropped > 0 and not publisher.connected.is_set()
    finally:
        publisher.stop()


@pytest.fixture(scope="module")
def broker() -> Iterator[MosquittoProcess]:
    if not mosquitto_available():
        pytest.skip("Debian's mosquitto is not installed (.ci/setup installs it)")
    proc = MosquittoProcess(USER, PASSWORD, tls=True).start()
    yield proc
    proc.close()


@pytest.mark.integration
def test_tls_broker_with_its_ca_and_only_with_it(broker: MosquittoProcess) -> None:
    subscriber = Subscriber(broker.port)
    trusting = MqttPublisher(broker.tls_url, tls_ca=broker.ca_file, reconnect_max_s=1)
    # Without the test CA the broker's certificate must not be accepted.
    doubting = MqttPublisher(broker.tls_url, reconnect_max_s=1)
    trusting.start()
    doubting.start()
    try:
        assert trusting.connected.wait(15), "no TLS connection with the broker's CA"
        notice = EventNotice(type="start", event_id=7, start_s=1.0, started_at=0.0, peak_score=0.8)
        subscriber.wait(lambda: subscriber.client.is_connected(), 10, "the subscriber")
        time.sleep(0.5)  # its subscription is in place
        trusting.publish(EventChanged("tls-cam", "tls cam", notice))
        subscriber.wait(lambda: subscriber.on("refinevad/tls-cam/events"), 10, "the event over TLS")
        assert json.loads(subscriber.on("refinevad/tls-cam/events")[0][0])["event"]["id"] == 7
        assert not doubting.connected.is_set()
    finally:
        trusting.stop()
        doubting.stop()
        subscriber.close()


@pytest.mark.integration
def test_service_publishes_events_scores_and_availability(tmp_path, broker: MosquittoProcess) -> None:
    subscriber = Subscriber(broker.port)
    service = ServiceProcess(
        tmp_path / "data",
        tmp_path / "service.log",
        mqtt_url=broker.url,
        mqtt_score_interval_s=2.0,
        public_url="http://nvr.local:8000",
    ).start()
    try:
        subscriber.wait(lambda: subscriber.on("refinevad/available"), 15, "availability")
        payload, _, _ = subscriber.on("refinevad/available")[-1]
        assert payload == b"online"
        policy = {"enter_threshold": 0.0, "exit_threshold": 0.0, "min_duration_s": 0.0}
        with service.client() as client:
            # Looped: the 18 s clip must not end (closing its event) while the broker is away.
            body = {"url": CLIP, "name": "loading bay", "events": policy, "loop": True}
            sid = client.post("/streams", json=body).json()["id"]
            events_topic, score_topic = f"refinevad/{sid}/events", f"refinevad/{sid}/score"
            subscriber.wait(lambda: subscriber.on(events_topic), 30, "an event start")
            start = json.loads(subscriber.on(events_topic)[0][0])
            assert start["type"] == "start" and start["stream_name"] == "loading bay"
            event = start["event"]
            assert event["snapshot_url"] == f"http://nvr.local:8000/events/{event['id']}/snapshot.jpg"
            assert event["clip_url"] == f"http://nvr.local:8000/events/{event['id']}/clip.mp4"
            assert event["dominant_category"] and abs(sum(event["categories"].values()) - 1) < 1e-3
            # Scores: retained, and no more than one per 2 s (the stream scores a snippet every 1.6 s).
            subscriber.wait(lambda: len(subscriber.on(score_topic)) >= 3, 20, "three score messages")
            scores = subscriber.on(score_topic)
            gaps = [b[2] - a[2] for a, b in itertools.pairwise(scores)]
            assert min(gaps) > 1.5, gaps
            score = json.loads(scores[-1][0])
            assert 0 <= score["score"] <= 1 and score["dominant_category"] in score["categories"]

            # The broker goes away: scoring carries on at its pace, and the service reconnects when it is back.
            broker.stop()
            before = client.get(f"/streams/{sid}").json()["snippets_processed"]
            time.sleep(5.0)
            during = client.get(f"/streams/{sid}").json()["snippets_processed"]
            assert during - before >= 2  # 10 fps, 16 frames a snippet: ~3 in 5 s
            broker.start()
            online_count = len([p for p, _, _ in subscriber.on("refinevad/available") if p == b"online"])
            subscriber.wait(
                lambda: (
                    len([p for p, _, _ in subscriber.on("refinevad/available") if p == b"online"])
                    > online_count
                ),
                30,
                "online again after the broker restart",
            )
            assert client.delete(f"/streams/{sid}").status_code == 204
            subscriber.wait(
                lambda: any(json.loads(p)["type"] == "end" for p, _, _ in subscriber.on(events_topic)),
                15,
                "the event end",
            )
            # The stream's retained score is cleared on removal (an empty retained message).
            subscriber.wait(lambda: subscriber.on(score_topic)[-1][0] == b"", 10, "the score cleared")
        kinds = [json.loads(p)["type"] for p, _, _ in subscriber.on(events_topic)]
        assert kinds[-1] == "end" and set(kinds) <= {"start", "update", "end"}

        # The last will: the service vanishes without a goodbye; the broker announces it offline.
        os.kill(service.pid, signal.SIGKILL)
        subscriber.wait(
            lambda: subscriber.on("refinevad/available")[-1][0] == b"offline", 60, "the last will (offline)"
        )
    finally:
        service.stop()
        subscriber.close()
    log = service.log()
    assert f"MQTT: connected to mqtt://***@127.0.0.1:{broker.port}" in log  # the broker named, masked
    assert PASSWORD not in log and USER not in log
