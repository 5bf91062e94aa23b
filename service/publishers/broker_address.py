"""The MQTT broker URL: `mqtt://[user[:password]@]host[:port]` or `mqtts://...` (TLS), parsed once for the settings
check and the publisher. Errors show the URL with its credentials masked."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from model.video.url_masking import mask_url

# scheme -> (default port, TLS)
SCHEMES = {"mqtt": (1883, False), "tcp": (1883, False), "mqtts": (8883, True), "ssl": (8883, True)}


class InvalidMqttUrl(ValueError):
    pass


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    display: str  # the URL with credentials masked, for logs

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """`mqtt://[user[:password]@]host[:port]` or `mqtts://...` (TLS). Raises InvalidMqttUrl (masked)."""
        display = mask_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidMqttUrl(f"malformed MQTT URL {display}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise InvalidMqttUrl(f"MQTT URL {display}: the scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise InvalidMqttUrl(f"MQTT URL {display}: no host")
        default_port, tls = SCHEMES[scheme]
        return cls(
            host=parts.hostname,
            port=port or default_port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            display=display,
        )
