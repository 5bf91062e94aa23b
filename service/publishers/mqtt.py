"""The MQTT publisher (paho-mqtt): live events and scores for Home Assistant and other site automation.

Topics, under a prefix (default `refinevad`):

- `<prefix>/available`: `online` (retained) once connected, `offline` on a clean stop, and `offline` as the last
  will, which the broker publishes if the service vanishes.
- `<prefix>/<stream id>/events`: JSON per event `start`, `update` (a new peak) and `end`, with the stream's name,
  the peak score, dominant category and distribution, and the snapshot and clip URLs (the clip answers 404 until it
  is finished). QoS 1, not retained.
- `<prefix>/<stream id>/score`: JSON of the latest final score and dominant category, retained, at most one per
  `score_interval_s` per stream (the newest value is always sent eventually). Cleared when the stream is removed.

`publish` only queues (bounded; the oldest event messages are dropped, counted, when the broker has been away
long); one thread hands messages to paho, whose own network thread connects and reconnects forever with capped
backoff. So a broker that is down or slow never slows the pipeline. Credentials are never logged: the broker is
logged as its masked URL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from service.publishers.base import EventChanged, Outgoing, Publisher, SnippetsScored, StreamRemoved
from service.publishers.broker_address import BrokerAddress, InvalidMqttUrl

__all__ = ["BrokerAddress", "InvalidMqttUrl", "MqttPublisher"]

logger = logging.getLogger(__name__)

QUEUE_LIMIT = 1000
TICK_S = 0.1


class MqttPublisher(Publisher):
    name = "mqtt"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "refinevad",
        client_id: str | None = None,
        score_interval_s: float = 1.0,
        public_url: str | None = None,
        tls_ca: Path | None = None,
        reconnect_max_s: int = 30,
    ) -> None:
        self.broker = BrokerAddress.parse(url)
        self.prefix = prefix.rstrip("/")
        self.score_interval_s = score_interval_s
        self.base_url = (public_url or "").rstrip("/")
        self.available_topic = f"{self.prefix}/available"
        self.dropped = 0
        self.sent = 0
        self._outbox: deque[tuple[str, str, int, bool]] = deque()
        self._scores: dict[str, str] = {}  # stream id -> newest score payload not sent yet
        self._score_sent_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self.connected = threading.Event()

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"refinevad-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            client.tls_set(ca_certs=str(tls_ca) if tls_ca else None, cert_reqs=ssl.CERT_REQUIRED)
        client.will_set(self.available_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=reconnect_max_s)
        client.max_queued_messages_set(QUEUE_LIMIT)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self.client = client

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        logger.info("MQTT: publishing to %s under %s/", self.broker.display, self.prefix)
        # connect_async + loop_start: the first connection is tried (and retried forever) on paho's thread.
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5.0)
        if self.connected.is_set():
            info = self.client.publish(self.available_topic, "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2.0)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            logger.warning("MQTT: %s refused the connection: %s", self.broker.display, reason)
            return
        logger.info("MQTT: connected to %s", self.broker.display)
        client.publish(self.available_topic, "online", qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if self.connected.is_set():
            logger.warning("MQTT: disconnected from %s (%s); reconnecting", self.broker.display, reason)
        self.connected.clear()

    # -- publisher -----------------------------------------------------------------------------------------
    def publish(self, message: Outgoing) -> None:
        if isinstance(message, SnippetsScored):
            final = message.final
            if final is None:
                return
            payload = json.dumps(
                {
                    "stream_id": message.stream_id,
                    "stream_name": message.stream_name,
                    "index": final.index,
                    "score": round(final.score, 4),
                    "dominant_category": final.dominant_category,
                    "categories": {k: round(v, 4) for k, v in final.categories.items()},
                    "captured_at": final.captured_at,
                }
            )
            with self._lock:
                self._scores[message.stream_id] = payload
        elif isinstance(message, EventChanged):
            self._enqueue(f"{self.prefix}/{message.stream_id}/events", self._event_payload(message), 1, False)
        elif isinstance(message, StreamRemoved):
            with self._lock:
                self._scores.pop(message.stream_id, None)
                self._score_sent_at.pop(message.stream_id, None)
            # An empty retained message deletes the retained score.
            self._enqueue(f"{self.prefix}/{message.stream_id}/score", "", 0, True)

    def _event_payload(self, message: EventChanged) -> str:
        notice = message.notice
        event = notice.model_dump(mode="json")
        event["id"] = event.pop("event_id")
        event["snapshot_url"] = f"{self.base_url}/events/{notice.event_id}/snapshot.jpg"
        event["clip_url"] = f"{self.base_url}/events/{notice.event_id}/clip.mp4"
        return json.dumps(
            {
                "type": notice.type,
                "stream_id": message.stream_id,
                "stream_name": message.stream_name,
                "event": event,
            }
        )

    def _enqueue(self, topic: str, payload: str, qos: int, retain: bool) -> None:
        with self._lock:
            if len(self._outbox) >= QUEUE_LIMIT:
                self._outbox.popleft()
                self.dropped += 1
            self._outbox.append((topic, payload, qos, retain))
        self._wake.set()

    # -- the sending thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(TICK_S)
            self._wake.clear()
            try:
                self._flush()
            except Exception:
                logger.exception("MQTT: publishing failed; continuing")
        self._flush()

    def _flush(self) -> None:
        now = time.monotonic()
        with self._lock:
            batch = list(self._outbox)
            self._outbox.clear()
            for stream_id, payload in list(self._scores.items()):
                if now - self._score_sent_at.get(stream_id, -1e9) >= self.score_interval_s:
                    batch.append((f"{self.prefix}/{stream_id}/score", payload, 0, True))
                    self._score_sent_at[stream_id] = now
                    del self._scores[stream_id]
        for topic, payload, qos, retain in batch:
            # QoS 1 messages wait in paho's bounded queue while the broker is away; QoS 0 ones are dropped.
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
            # NO_CONN on a QoS 1 message means paho kept it to send on reconnection, so it is not lost.
            if info.rc == mqtt.MQTT_ERR_SUCCESS or (qos > 0 and info.rc == mqtt.MQTT_ERR_NO_CONN):
                self.sent += 1
            else:
                self.dropped += 1
