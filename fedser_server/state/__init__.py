"""What the server keeps on disk: global state, client registry, metrics."""
