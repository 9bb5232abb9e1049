"""The fedser coordinator: registry, round engine, strategies, persistence, gRPC servicer, CLI."""
