"""The machine-readable reason of a refused call, sent in the call's trailing metadata.

The server puts its refusal key (e.g. `stale_round`, `session_expired`; docs/protocol.md lists
them) under `fedser-refusal`; clients branch on it rather than on the words of the message.
"""

from __future__ import annotations

import grpc

REFUSAL_METADATA_KEY = "fedser-refusal"
# with a refusal that says when to come back (`upload_slots_busy`): milliseconds, a decimal integer
RETRY_AFTER_METADATA_KEY = "fedser-retry-after-ms"
# in an update stream's initial metadata, sent the moment the upload holds a slot: send the data now
UPLOAD_GRANTED_METADATA = (("fedser-upload", "granted"),)

SESSION_LOST = frozenset({"session_expired", "unknown_client"})  # join again, keeping the client id
# drop the task, ask for the next one (a secure round that went on without this client, or was given up)
TASK_GONE = frozenset({"stale_round", "not_participating", "secagg_stage", "below_threshold", "secagg_sum", "secagg"})
# the update or evaluation sent was refused: drop it (c_i is kept only for accepted updates), stay for the next task
REPORT_REFUSED = frozenset({"invalid_update", "corrupt_blob", "norm_bound", "invalid_request", "small_update_too_large",
                            "invalid_share", "invalid_masked_input"})
# the server cannot take the update now (no disk space to park it): wait long before sending it again
SERVER_FULL = frozenset({"disk_full"})


def _trailer(error: grpc.RpcError, name: str) -> str | None:
    trailing = getattr(error, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == name:
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


def refusal_of(error: grpc.RpcError) -> str | None:
    """The refusal key the server sent with this error, or None (an older server, or no refusal)."""
    return _trailer(error, REFUSAL_METADATA_KEY)


def retry_after_of(error: grpc.RpcError) -> float | None:
    """Seconds after which the server said to send the call again, or None if it said nothing (or nonsense)."""
    value = _trailer(error, RETRY_AFTER_METADATA_KEY)
    if value is None or not value.isdecimal():
        return None
    return int(value) / 1000.0
