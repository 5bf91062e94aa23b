"""Security properties of the running service: every route but /health (and the static, data-free page and API
docs) needs a key, HTTP and WebSocket alike; keys are compared in constant time; credentials in stream URLs never
leave the process (answers, refusals, WebSocket messages, /metrics, /events, logs); CORS is off unless configured.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.requests import HTTPConnection
from starlette.routing import WebSocketRoute
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from service import auth
from service.app import ROUTERS
from tests.reliability.conftest import LIVE_ENV, open_live, wait_for
from tests.rtsp_server import RtspServerProcess, gstreamer_available
from tests.service.conftest import API_KEY, ServerProcess, assert_error

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

# Served without a key by design: liveness, the API description, and the static page (it holds no data and asks
# the API with the key its user types in).
PUBLIC = {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/", "/ui/", "/ui/{name}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("security") / "data", env=LIVE_ENV).start()
    yield proc
    proc.stop()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_but_the_public_ones_needs_a_key(server: ServerProcess, report) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as anon:
        schema = anon.get("/openapi.json").json()
        operations = [
            (method.upper(), path)
            for path, item in schema["paths"].items()
            for method in item
            if method in ("get", "post", "put", "patch", "delete")
        ]
        # The schema lists every HTTP route the routers define, except those deliberately left out of it.
        routed = {
            (method, route.path)
            for router in ROUTERS
            for route in router.routes
            if not isinstance(route, WebSocketRoute)
            for method in getattr(route, "methods", ())
            if method != "HEAD"
        }
        hidden = {path for method, path in routed - set(operations)}
        assert hidden <= PUBLIC, hidden
        checked = 0
        for method, path in operations:
            target = _concrete(path)
            if path in PUBLIC:
                assert anon.request(method, target).status_code < 400
                continue
            for headers, status in (
                ({}, 401),
                ({"X-API-Key": "wrong"}, 403),
                ({"Authorization": "Bearer wrong"}, 403),
                ({"X-API-Key": API_KEY[:-1]}, 403),
                ({"X-API-Key": API_KEY + "x"}, 403),
            ):
                assert_error(anon.request(method, target, headers=headers), status)
            checked += 1
    websockets = [
        route.path for router in ROUTERS for route in router.routes if isinstance(route, WebSocketRoute)
    ]
    assert websockets
    ws_base = server.url.replace("http://", "ws://")
    for path in websockets:
        for query, headers in (("", {}), ("?api_key=wrong", {}), ("", {"X-API-Key": "wrong"})):
            with pytest.raises(InvalidStatus) as refused:
                connect(f"{ws_base}{_concrete(path)}{query}", additional_headers=headers, open_timeout=10)
            assert refused.value.response.status_code == 403
    report("http_operations_checked", checked)
    report("websocket_routes_checked", len(websockets))
    report("public_routes", sorted(PUBLIC & ({p for _, p in operations} | hidden)))


def test_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every configured key is compared with `hmac.compare_digest`, whether or not an earlier one matched."""
    source = inspect.getsource(auth.ApiKeyAuth.matches)
    assert "compare_digest" in source and "==" not in source
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    keys = [b"first-key-000", b"second-key-11", b"third-key-222"]
    checker = auth.ApiKeyAuth(keys)
    for presented, allowed in (("first-key-000", True), ("third-key-222", True), ("first-key-00", False)):
        calls.clear()
        conn = HTTPConnection(
            {"type": "http", "headers": [(b"x-api-key", presented.encode())], "query_string": b""}
        )
        assert (checker.check(conn) is None) is allowed
        assert [b for _, b in calls] == keys  # all keys, in full, every time


def test_stream_credentials_never_leave_the_process(server: ServerProcess, hostile_peers, report) -> None:
    silent, garbage = hostile_peers("silent"), hostile_peers("garbage")
    secrets = {f"S3cret-{k}-{n}" for k, n in enumerate("abcdefghij")}
    s = sorted(secrets)
    accepted = [
        f"rtsp://admin:{s[0]}@127.0.0.1:{silent.port}/cam",
        f"rtsp://{s[1]}@127.0.0.1:{garbage.port}/cam",
        f"http://127.0.0.1:{garbage.port}/video.mjpg?token={s[2]}&password={s[3]}",
    ]
    refused = [
        f"ftp://u:{s[4]}@127.0.0.1/x",
        f"rtsp://u:{s[5]}@169.254.169.254/x",
        f"rtsp://u:{s[6]}@127.0.0.1:99999/x",
        f"rtsp://u:{s[7]}@/x",
    ]
    camera = None
    if gstreamer_available():
        # A real camera that refuses the password: its error must not echo the URL either.
        camera = RtspServerProcess(user="operator", password="right-password").start()
        accepted.append(f"rtsp://operator:{s[8]}@127.0.0.1:{camera.port}/cam")
    texts: list[str] = []
    try:
        with server.client() as client:
            ids = []
            for url in accepted:
                response = client.post("/streams", json={"url": url, "name": "../../etc/passwd"})
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
                texts.append(response.text)
            for url in refused:
                response = client.post("/streams", json={"url": url, "name": "x"})
                assert_error(response, 422, "invalid_stream_url")
                texts.append(response.text)
            # Let every reader fail a few times, with its error in the views and the WebSocket state messages.
            wait_for(
                lambda: all(client.get(f"/streams/{sid}").json()["connect_attempts"] >= 2 for sid in ids),
                20,
                "connection attempts",
            )
            for sid in ids:
                view = client.get(f"/streams/{sid}")
                assert view.json()["last_error"]
                texts.append(view.text)
                with open_live(server, sid) as ws, contextlib.suppress(TimeoutError):
                    texts.append(ws.recv(timeout=3))
            texts += [client.get("/streams").text, client.get("/metrics").text, client.get("/events").text]
            # A browser-style WebSocket key in the query string is kept out of the access log too.
            ws_base = server.url.replace("http://", "ws://")
            with connect(f"{ws_base}/streams/{ids[0]}/live?api_key={API_KEY}", open_timeout=10) as ws:
                ws.recv(timeout=5)
            for sid in ids:
                assert client.delete(f"/streams/{sid}").status_code == 204
    finally:
        if camera is not None:
            camera.kill()
    time.sleep(0.5)
    log = server.log_tail(10**8)
    texts.append(log)
    leaked = {secret for secret in secrets if any(secret in text for text in texts)}
    assert not leaked, leaked
    assert API_KEY not in log
    assert "***" in json.dumps(texts[0])
    report("surfaces_checked", len(texts))
    report("log_bytes_checked", len(log))


def test_cors_is_off_by_default(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as anon:
        for method, path in (("GET", "/jobs"), ("POST", "/streams"), ("DELETE", "/streams/x")):
            preflight = anon.options(
                path,
                headers={
                    "Origin": "https://attacker.example",
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "X-API-Key, Content-Type",
                },
            )
            assert "access-control-allow-origin" not in preflight.headers
            assert "access-control-allow-credentials" not in preflight.headers
        actual = anon.get("/streams", headers={"Origin": "https://attacker.example", "X-API-Key": API_KEY})
        assert actual.status_code == 200 and "access-control-allow-origin" not in actual.headers
