"""Code shared by the fedser coordinator and client: protocol, model, codec, config, metrics."""

PROTOCOL_VERSION = 1
