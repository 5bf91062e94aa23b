"""Cluster mode (`refinevad serve --cluster ADDRESS`): the service spread over the machines of a Ray cluster, with
PostgreSQL as the shared store. Ray places the live workers (one per GPU) and the file jobs, detects dead nodes
and restarts what ran there; this package says what runs where, moves a lost worker's streams to the surviving
ones on Ray's word, and rebuilds state from the store."""
