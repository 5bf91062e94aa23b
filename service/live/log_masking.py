"""Keeps API keys passed as `?api_key=` (WebSocket clients in browsers) out of the server's logs.

uvicorn logs every WebSocket connection with its full path and query string; this filter rewrites the key's value
before any handler sees the record.
"""

from __future__ import annotations

import logging
import re

_KEY_IN_QUERY = re.compile(r"(?i)([?&](?:api_key|access_token|token)=)[^&\s\"']*")
LOGGERS = ("uvicorn.error", "uvicorn.access")


class QuerySecretFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _KEY_IN_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str) and "=" in record.msg:
            record.msg = _KEY_IN_QUERY.sub(r"\1***", record.msg)
        return True


def install() -> None:
    """Idempotent: adds the filter to uvicorn's loggers once."""
    for name in LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, QuerySecretFilter) for f in target.filters):
            target.addFilter(QuerySecretFilter())
