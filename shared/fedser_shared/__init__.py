"""Code shared by the fedser coordinator and client: protocol, model, codec, config, metrics."""

PROTOCOL_VERSION = 2  # 2: an update's sha256 travels in a trailer after its data
