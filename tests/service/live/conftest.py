from __future__ import annotations

import pytest

from tests.rtsp_server import gstreamer_available

requires_gstreamer = pytest.mark.skipif(
    not gstreamer_available(), reason="GStreamer RTSP server (gstreamer1.0-rtsp, python3-gi) not installed"
)
