"""Cluster mode (`refinevad serve --cluster ADDRESS`): the service spread over the machines of a Ray cluster, with
PostgreSQL as the shared store. Ray places the live workers and the file jobs, detects dead nodes and restarts
what ran there; this package only says what runs where and rebuilds state from the store."""
