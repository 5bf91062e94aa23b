"""Source URL allow-lists and credential masking."""

from __future__ import annotations

import pytest

from service.live.urls import InvalidSourceUrl, check_source_url, mask_url

SCHEMES = ["rtsp", "rtsps", "http", "https"]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
        ("rtsp://tokenonly@cam.local/live", "rtsp://***@cam.local/live"),
        ("https://cam.example/video?token=abc123&res=hd", "https://cam.example/video?token=***&res=hd"),
        ("rtsp://cam.local/live", "rtsp://cam.local/live"),
    ],
)
def test_mask_url_hides_every_credential(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    for secret in ("hunter2", "tokenonly", "abc123", "admin"):
        assert secret not in mask_url(url)


def test_allowed_urls_pass_unchanged() -> None:
    url = "rtsp://user:pw@10.0.0.5:554/s"
    assert check_source_url(url, SCHEMES, []) == url
    assert check_source_url(url, SCHEMES, ["10.0.0.5"]) == url


@pytest.mark.parametrize(
    ("url", "schemes", "hosts", "reason"),
    [
        ("file:///etc/passwd", SCHEMES, [], "scheme 'file' is not allowed"),
        ("/etc/passwd", SCHEMES, [], "scheme 'file' is not allowed"),
        ("rtsp://other.host/s", SCHEMES, ["cam.local"], "host 'other.host' is not allowed"),
        ("rtsp:///nohost", SCHEMES, [], "no host"),
        ("rtsp://cam:notaport/s", SCHEMES, [], "malformed"),
        ("gopher://cam/s", SCHEMES, [], "not allowed"),
        ("cam.local/stream", SCHEMES, [], "is not a URL"),
        ("rtsp://cam/s\r\nX: y", SCHEMES, [], "control characters"),
        ("file:///no/such/file.mp4", [*SCHEMES, "file"], [], "no such file"),
    ],
)
def test_refused_urls_say_why_without_leaking(
    url: str, schemes: list[str], hosts: list[str], reason: str
) -> None:
    with pytest.raises(InvalidSourceUrl, match=reason):
        check_source_url(url, schemes, hosts)


def test_file_replay_when_enabled(tmp_path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    assert check_source_url(str(video), [*SCHEMES, "file"], []) == str(video)
    assert check_source_url(f"file://{video}", [*SCHEMES, "file"], []) == str(video)
