"""Stream source URLs: checking them against the allow-lists, and masking the credentials they may carry.

Camera URLs often hold `user:password@` (or a bare token as the user part, or a `password=`/`token=` query
parameter). The full URL is kept only where the reader needs it to connect and in the database; everything that
leaves the process (API answers, logs, WebSocket messages) uses `mask_url`.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from urllib.parse import urlsplit

from model.video.url_masking import MASK, SECRET_QUERY_KEYS, mask_url

__all__ = ["MASK", "SECRET_QUERY_KEYS", "InvalidSourceUrl", "check_source_url", "mask_url"]


class InvalidSourceUrl(ValueError):
    """The URL is malformed or not allowed by the service's configuration."""


def check_source_url(url: str, allowed_schemes: list[str], allowed_hosts: list[str]) -> str:
    """The URL to open (a plain path becomes `file://`-style local replay), or `InvalidSourceUrl` saying why.

    Network URLs need a host, and the host must be in `allowed_hosts` when that list is not empty. Local files
    (a `file://` URL or an absolute path) need `file` among the allowed schemes and must exist.
    """
    text = url.strip()
    if not text:
        raise InvalidSourceUrl("the stream URL is empty")
    if any(ch in text for ch in "\r\n\t\x00"):
        raise InvalidSourceUrl("the stream URL contains control characters")
    if "://" not in text:
        if not text.startswith("/"):
            raise InvalidSourceUrl(
                f"{mask_url(text)!r} is not a URL: use scheme://host/path (allowed schemes: "
                f"{', '.join(allowed_schemes)}), or an absolute file path when file replay is enabled"
            )
        text = f"file://{text}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidSourceUrl(f"malformed stream URL {mask_url(text)}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in allowed_schemes:
        raise InvalidSourceUrl(
            f"URL scheme {scheme!r} is not allowed (allowed: {', '.join(allowed_schemes) or 'none'}; "
            "the REFINEVAD_ALLOWED_SCHEMES setting controls this)"
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidSourceUrl("file URLs must be local: file:///absolute/path")
        path = Path(parts.path)
        if not path.is_absolute() or not path.exists():
            raise InvalidSourceUrl(f"no such file or frame folder for replay: {parts.path}")
        return str(path)
    host = parts.hostname
    if not host:
        raise InvalidSourceUrl(f"malformed stream URL {mask_url(text)}: no host")
    if port == 0:
        raise InvalidSourceUrl(f"malformed stream URL {mask_url(text)}: port 0")
    if allowed_hosts:
        if host.lower() not in {h.lower() for h in allowed_hosts}:
            raise InvalidSourceUrl(
                f"host {host!r} is not allowed (the REFINEVAD_ALLOWED_HOSTS setting lists the allowed hosts)"
            )
    elif (why := local_host_kind(host)) is not None:
        raise InvalidSourceUrl(
            f"host {host!r} is {why}; such hosts are refused unless named in REFINEVAD_ALLOWED_HOSTS"
        )
    return text


# Names of this machine and of cloud instance-metadata services (which hand out credentials).
_LOCAL_NAMES = frozenset(
    {"localhost", "ip6-localhost", "ip6-loopback", "metadata", "metadata.google.internal", "instance-data"}
)
_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)


def local_host_kind(host: str) -> str | None:
    """Why `host` must not be read from without explicit configuration (None if it may be).

    The service must not be made to reach itself, its neighbours' link-local services or a cloud metadata
    endpoint through a stream URL. IPv4 literals are read the way the C library reads them (`127.1`,
    `2130706433`, `0x7f000001`, `0177.0.0.1` are all 127.0.0.1). Host names are not resolved here.
    """
    name = host.lower().rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return "a local or cloud-metadata host name"
    address = _ip_literal(name)
    if address is None:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "the unspecified address (this machine)"
    if address.is_link_local or address in _METADATA_ADDRESSES:
        return "a link-local or cloud-metadata address"
    if address.is_multicast:
        return "a multicast address"
    return None


def _ip_literal(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    # Shorthand, decimal, octal and hex IPv4 forms; letters other than hex digits and `x` mean a host name.
    if name and all(ch in "0123456789abcdefx." for ch in name) and any(ch.isdigit() for ch in name):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return None
    return None


def is_file_source(url: str) -> bool:
    return "://" not in url
