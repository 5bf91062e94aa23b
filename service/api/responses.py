"""OpenAPI declarations of the error answers routes can give (all use `ErrorBody`)."""

from __future__ import annotations

from typing import Any

from service.schemas import ErrorBody

_DESCRIPTIONS = {
    400: "malformed request",
    401: "missing API key",
    403: "invalid API key",
    404: "no such resource",
    408: "the upload stalled (no data for the configured idle time)",
    409: "conflict with the resource's state",
    413: "upload over the size limit",
    415: "wrong content type or file type",
    416: "the requested byte range is outside the file",
    422: "invalid parameters, or a file that is not a decodable video",
    500: "unexpected server error",
    503: "model not loaded (yet), or the database is locked by another process",
    507: "no space left on the server's disk",
}

AUTH_ERRORS = (401, 403)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}
