"""gRPC channel/server options shared by both ends."""

from __future__ import annotations

CHUNK_MESSAGE_LIMIT = 8 * 1024 * 1024  # one streamed chunk (1 MiB) plus headers, with room


def _common() -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", CHUNK_MESSAGE_LIMIT),
        ("grpc.max_receive_message_length", CHUNK_MESSAGE_LIMIT),
    ]


def client_channel_options() -> list[tuple[str, int]]:
    # keepalive pings keep an idle channel open through long local training
    return _common() + [
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def server_options() -> list[tuple[str, int]]:
    # accept the clients' 60 s keepalive pings instead of answering them with GOAWAY
    return _common() + [
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", 0),
    ]
