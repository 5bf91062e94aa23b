"""Live streams: readers, the batched scheduler with device-side windows, WebSocket fan-out, live events."""
