"""Video uploads streamed from the request body straight to a spool file, with the size limit enforced as bytes
arrive (and up front from Content-Length), so an oversized or hostile upload never sits in memory or fills the disk.

Only the multipart field `file` is kept. Its file name and declared content type are not trusted: DVR exports come
as `.h264`, `.264`, `.h265` or with no extension, and clients label `.ts` files as anything from `video/mp2t` to
Qt translations. Whether the bytes are a video is decided afterwards by probing them with the decoder (see
`model.video.pyav_source`), which is also why the spool file keeps no extension.

A client must keep the upload moving: besides the idle timeout (nothing received for a while), an upload whose
average rate falls below a minimum once a grace period is over, or that outlasts a total deadline, is cut off with
408 and its spool file removed, so a slow drip cannot hold a connection and disk space forever. The limits count
from the body's first byte, part headers included, and are kept by the connection itself under `refinevad serve`
(see `_chunks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from service.errors import ApiError
from service.http_protocol import body_clock
from service.request_limits import UploadPace

logger = logging.getLogger(__name__)

FILE_FIELD = "file"
# Multipart framing and small form fields ride on top of the file's own bytes.
MULTIPART_OVERHEAD = 64 * 1024
PARTIAL_SUFFIX = ".part"
MAX_PART_HEADER = 16 * 1024
MAX_BOUNDARY = 70  # RFC 2046
# Writing the spool file fails with these when the disk, a quota or the process's file size limit is reached.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@dataclass
class ReceivedUpload:
    path: Path
    filename: str
    content_type: str | None
    size: int


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    content_type: str | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class _UploadReceiver:
    """python-multipart callbacks that write the `file` part to disk and account for every byte."""

    def __init__(self, dest: Path, max_bytes: int) -> None:
        self.dest = dest
        self.max_bytes = max_bytes
        self.part = _Part()
        self.header_name = b""
        self.header_value = b""
        self.file: BinaryIO | None = None
        self.writing = False
        self.file_seen = False
        self.received: _Part | None = None
        self.size = 0
        self.other_bytes = 0

    # -- callbacks (raising here aborts parser.write with the error) --

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]
        self._check_header_size()

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]
        self._check_header_size()

    def _check_header_size(self) -> None:
        # Part headers are collected in memory: a header that never ends must not grow with the body.
        if len(self.header_name) + len(self.header_value) > MAX_PART_HEADER:
            raise ApiError(
                400, "part_header_too_large", f"a multipart part header exceeds {MAX_PART_HEADER // 1024} KiB"
            )

    def on_header_end(self) -> None:
        self.part.headers.append((self.header_name.lower().strip(), self.header_value.strip()))
        self.header_name = b""
        self.header_value = b""

    def on_headers_finished(self) -> None:
        headers = dict(self.part.headers)
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        self.part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            self.part.filename = options[b"filename"].decode("utf-8", "replace")
        if b"content-type" in headers:
            self.part.content_type = headers[b"content-type"].decode("latin-1").strip().lower() or None
        self.writing = self.part.name == FILE_FIELD
        if not self.writing:
            if self.part.filename is not None:
                # A file under another field name: say so now, not "form too large" once it passes 64 KiB.
                raise ApiError(
                    400,
                    "missing_file",
                    f"a file was sent in the multipart field {self.part.name!r}; send the video in the field "
                    f"{FILE_FIELD!r}",
                )
            return
        if self.file_seen:
            raise ApiError(
                400, "too_many_files", f"send exactly one file in the multipart field {FILE_FIELD!r}"
            )
        self.file_seen = True
        self.file = self.dest.open("wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        length = end - start
        if not self.writing:
            self.other_bytes += length
            if self.other_bytes > MULTIPART_OVERHEAD:
                raise ApiError(400, "form_too_large", "form fields other than the file are limited to 64 KiB")
            return
        self.size += length
        if self.size > self.max_bytes:
            raise too_large(self.max_bytes)
        assert self.file is not None
        self.file.write(data[start:end])

    def on_part_end(self) -> None:
        if self.writing and self.file is not None:
            self.file.close()
            self.file = None
            self.received = self.part
        self.writing = False

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def too_large(max_bytes: int) -> ApiError:
    return ApiError(
        413, "payload_too_large", f"the upload exceeds the limit of {max_bytes / (1024 * 1024):g} MiB"
    )


async def _chunks(request: Request, pace: UploadPace) -> AsyncIterator[bytes]:
    """The body's chunks, cut off with 408 when the client stalls, drips too slowly or runs past the deadline (a
    slow-loris client must not hold a connection and a spool file forever).

    Under `refinevad serve` the connection keeps the pace (`service.http_protocol.BodyClock`): counted from the
    body's first byte as it arrives, by a timer that needs neither a chunk to arrive nor this task to be
    scheduled; it wakes the wait here, which raises the 408 (the connection answers it itself when the app does
    not, e.g. busy elsewhere). Elsewhere (another ASGI server) the pace is kept here, around each wait for a
    chunk."""
    clock = body_clock(request.scope)
    if clock is not None:
        clock.enforce(pace)
        while True:
            # The connection wakes this receive when a limit breaks.
            message = await request.receive()
            if clock.broken is not None:
                raise ApiError(408, *clock.broken, headers={"Connection": "close"})
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            if body := message.get("body", b""):
                yield body
            if not message.get("more_body", False):
                return
    stream = request.stream().__aiter__()
    started = last = time.monotonic()
    received = 0
    while True:
        # The nearest limit decides how long to wait, and which one a timeout breaks.
        at, reason = pace.next_limit(started, last, received)
        try:
            wait = at - time.monotonic()
            if wait <= 0:
                raise TimeoutError
            chunk = await asyncio.wait_for(anext(stream), wait)
        except StopAsyncIteration:
            return
        except TimeoutError:
            code, message = pace.violation(reason, time.monotonic() - started, received)
            raise ApiError(408, code, message, headers={"Connection": "close"}) from None
        last = time.monotonic()
        received += len(chunk)
        yield chunk


async def receive_video_upload(
    request: Request, dest: Path, max_bytes: int, pace: UploadPace | None = None
) -> ReceivedUpload:
    """Stream the request's multipart `file` part into `dest`; on any failure `dest` does not exist afterwards.

    Raises `ApiError`: 415 for a body that is not multipart/form-data, 400 for malformed multipart or a missing
    `file` field, 413 over `max_bytes`, 408 when the upload breaks `pace`, 422 for an empty file, 507 when the
    spool's disk is full.
    """
    content_type = request.headers.get("content-type", "")
    media_type, params = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the video as multipart/form-data in a field named {FILE_FIELD!r} (got {content_type or 'none'})",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_multipart", "the multipart Content-Type has no boundary")
    if len(boundary) > MAX_BOUNDARY:
        raise ApiError(
            400, "bad_multipart", f"the multipart boundary is longer than {MAX_BOUNDARY} characters"
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_bytes = int(declared)
        except ValueError:
            raise ApiError(400, "bad_request", "Content-Length is not a number") from None
        if declared_bytes > max_bytes + MULTIPART_OVERHEAD:
            raise too_large(max_bytes)

    dest.parent.mkdir(parents=True, exist_ok=True)
    receiver = _UploadReceiver(dest, max_bytes)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": receiver.on_part_begin,
            "on_part_data": receiver.on_part_data,
            "on_part_end": receiver.on_part_end,
            "on_header_field": receiver.on_header_field,
            "on_header_value": receiver.on_header_value,
            "on_header_end": receiver.on_header_end,
            "on_headers_finished": receiver.on_headers_finished,
        },
    )
    total = 0
    try:
        async for chunk in _chunks(request, pace or UploadPace()):
            total += len(chunk)
            if total > max_bytes + MULTIPART_OVERHEAD:
                raise too_large(max_bytes)
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        receiver.close()
        dest.unlink(missing_ok=True)
        raise ApiError(400, "bad_multipart", f"the multipart body could not be parsed: {exc}") from None
    except OSError as exc:
        with contextlib.suppress(OSError):
            receiver.close()
        dest.unlink(missing_ok=True)
        if exc.errno in _NO_SPACE:
            logger.warning("upload refused: the spool %s is full (%s)", dest.parent, exc.strerror)
            raise ApiError(
                507, "storage_full", "no space left on the server for this upload; retry later"
            ) from None
        raise
    except BaseException:
        receiver.close()
        dest.unlink(missing_ok=True)
        raise
    receiver.close()
    if receiver.received is None:
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        if receiver.file_seen:
            raise ApiError(400, "bad_multipart", f"the {FILE_FIELD!r} part ended before the body did")
        raise ApiError(400, "missing_file", f"no multipart field named {FILE_FIELD!r} with a video file")
    if receiver.size == 0:
        dest.unlink(missing_ok=True)
        raise ApiError(422, "empty_file", f"the uploaded file {receiver.received.filename!r} is empty")
    return ReceivedUpload(
        path=dest,
        filename=receiver.received.filename or "upload",
        content_type=receiver.received.content_type,
        size=receiver.size,
    )
