"""Watching a run: Prometheus metrics of a live server, and `status`/`report` from a state dir alone."""
