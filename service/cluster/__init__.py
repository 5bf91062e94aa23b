"""Cluster mode (`refinevad serve --cluster ADDRESS`): the service spread over the machines of a Ray cluster, with
PostgreSQL as the shared store. The live workers are pinned one per node (`placement`), file jobs run as Ray
tasks; Ray detects dead nodes, and this package hands a lost worker's streams to the surviving ones at once,
spreads them back when a node joins, and rebuilds state from the store."""
