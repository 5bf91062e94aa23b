"""Where live results go: one `Publisher` interface, one `Dispatcher` that owns every sink (WebSocket hub, webhook,
MQTT, event media). Adding a sink means writing one `Publisher` and registering it with the dispatcher."""
