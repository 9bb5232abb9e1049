"""gRPC: the thin servicer and the server that hosts it."""
