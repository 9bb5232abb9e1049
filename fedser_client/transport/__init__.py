"""gRPC: the client's connection to the coordinator and its task loop."""
