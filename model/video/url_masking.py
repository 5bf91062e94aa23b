"""Masking the credentials a video URL may carry, for everything that leaves the process.

Camera URLs often hold `user:password@` (or a bare token as the user part, or a `password=`/`token=` query
parameter). Messages, logs, API answers and reprs use `mask_url`.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

# Query parameters that commonly carry secrets in camera and streaming-server URLs.
SECRET_QUERY_KEYS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "token",
        "access_token",
        "auth",
        "key",
        "api_key",
        "apikey",
        "secret",
        "sig",
    }
)
MASK = "***"


def mask_url(url: str) -> str:
    """The URL with any user info and secret-looking query values replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*")
    return parts._replace(netloc=netloc, query=query).geturl()
