"""The fedser client daemon: data scan + features, local trainer, SCAFFOLD state, gRPC loop, CLI."""
