"""API-key authentication for HTTP routes and WebSockets.

Keys arrive as `X-API-Key: <key>` or `Authorization: Bearer <key>` (WebSockets and the media files may also pass
`?api_key=`, since browsers cannot set headers on them or on `<img>` and `<video>`). A missing key is 401, a wrong one 403. Keys are compared in constant time
against every configured key, so timing says nothing about which key or how much of it matched.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

from fastapi import Request, Security, WebSocket
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from service.errors import ApiError

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
WEBSOCKET_QUERY_PARAM = "api_key"

# auto_error=False: this module decides between 401 and 403; the objects are here for the OpenAPI schema.
api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="an API key from the config")
bearer_token = HTTPBearer(auto_error=False, description="an API key as a bearer token")


@dataclass(frozen=True)
class AuthFailure:
    status_code: int
    code: str
    message: str


class ApiKeyAuth:
    def __init__(self, keys: list[bytes]) -> None:
        self._keys = [key for key in keys if key]

    @property
    def open(self) -> bool:
        return not self._keys

    def matches(self, presented: str) -> bool:
        candidate = presented.encode()
        matched = False
        for key in self._keys:
            # No short-circuit: every key is compared whatever the outcome.
            matched |= hmac.compare_digest(candidate, key)
        return matched

    def check(self, conn: HTTPConnection, *, allow_query: bool = False) -> AuthFailure | None:
        """None when the connection may proceed, else why not."""
        if self.open:
            return None
        presented = conn.headers.get(API_KEY_HEADER)
        if presented is None:
            authorization = conn.headers.get("authorization")
            if authorization is not None:
                scheme, _, token = authorization.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    return AuthFailure(
                        401, "unauthorized", "unsupported Authorization header: use 'Bearer <API key>'"
                    )
                presented = token.strip()
        if presented is None and allow_query:
            presented = conn.query_params.get(WEBSOCKET_QUERY_PARAM)
        if presented is None:
            return AuthFailure(
                401, "unauthorized", f"missing API key: send it as {API_KEY_HEADER} or Authorization: Bearer"
            )
        if not self.matches(presented):
            return AuthFailure(403, "forbidden", "invalid API key")
        return None


def _auth_of(conn: HTTPConnection) -> ApiKeyAuth:
    return conn.app.state.services.auth


async def require_api_key(
    request: Request,
    _key: str | None = Security(api_key_header),
    _bearer: HTTPAuthorizationCredentials | None = Security(bearer_token),
) -> None:
    """Router dependency for HTTP routes."""
    failure = _auth_of(request).check(request)
    if failure is not None:
        headers = {"WWW-Authenticate": "Bearer"} if failure.status_code == 401 else None
        raise ApiError(failure.status_code, failure.code, failure.message, headers=headers)


async def require_api_key_or_query(
    request: Request,
    _key: str | None = Security(api_key_header),
    _bearer: HTTPAuthorizationCredentials | None = Security(bearer_token),
) -> None:
    """Router dependency for media files (snapshots, clips) that `<img>` and `<video>` load: `?api_key=` too."""
    failure = _auth_of(request).check(request, allow_query=True)
    if failure is not None:
        headers = {"WWW-Authenticate": "Bearer"} if failure.status_code == 401 else None
        raise ApiError(failure.status_code, failure.code, failure.message, headers=headers)


async def websocket_auth_failure(websocket: WebSocket) -> AuthFailure | None:
    """For WebSocket routes: check before `accept()`; on failure close with code 1008 (policy violation)."""
    return _auth_of(websocket).check(websocket, allow_query=True)
