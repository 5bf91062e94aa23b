"""Snapshots and clips of live events: a frame ring per stream (`ring`), JPEG/MP4 encoding (`encoding`), files and
their rows (`store`), and the publisher that records them under a retention policy (`recorder`)."""
