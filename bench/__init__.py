"""Benchmarks: `refinevad bench` (bench.suite) and the standalone `python -m bench.<name>` scripts it draws on."""
