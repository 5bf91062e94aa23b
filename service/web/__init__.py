"""The small web page the service serves at /ui/: streams, a live score timeline with category bars, events."""
