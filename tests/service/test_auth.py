"""API-key checks on HTTP requests and WebSocket handshakes (unit level; the live server tests cover routes)."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from service.auth import ApiKeyAuth


def _conn(headers: dict[str, str] | None = None, query: str = "", kind: str = "http") -> HTTPConnection:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return HTTPConnection({"type": kind, "headers": raw, "query_string": query.encode(), "path": "/"})


def test_open_when_no_keys() -> None:
    auth = ApiKeyAuth([])
    assert auth.open and auth.check(_conn()) is None


def test_header_and_bearer_keys() -> None:
    auth = ApiKeyAuth([b"alpha", b"beta"])
    assert auth.check(_conn({"X-API-Key": "beta"})) is None
    assert auth.check(_conn({"Authorization": "Bearer alpha"})) is None
    assert auth.check(_conn({"Authorization": "bearer   alpha"})) is None
    missing = auth.check(_conn())
    assert missing is not None and missing.status_code == 401
    for wrong in ({"X-API-Key": "alph"}, {"X-API-Key": "alphaa"}, {"Authorization": "Bearer gamma"}):
        failure = auth.check(_conn(wrong))
        assert failure is not None and failure.status_code == 403
    for malformed in ({"Authorization": "Basic alpha"}, {"Authorization": "Bearer "}):
        failure = auth.check(_conn(malformed))
        assert failure is not None and failure.status_code == 401


def test_query_key_only_where_allowed() -> None:
    auth = ApiKeyAuth([b"alpha"])
    assert auth.check(_conn(query="api_key=alpha", kind="websocket"), allow_query=True) is None
    refused = auth.check(_conn(query="api_key=alpha"))
    assert refused is not None and refused.status_code == 401
    wrong = auth.check(_conn(query="api_key=nope", kind="websocket"), allow_query=True)
    assert wrong is not None and wrong.status_code == 403
