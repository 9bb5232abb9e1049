"""SubmitUpdate that sends its data only once the server granted the upload a slot.

The server sends the call's initial metadata (`fedser-upload: granted`) the moment the upload
holds one of its upload slots, right after the header; an upload that finds every slot taken is
refused with the header alone. Holding the data back until then means a refused upload has put
nothing but its header on the wire, whatever the size of the server's stream windows
(docs/protocol.md, SubmitUpdate).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc

# a server older than the grant sends no initial metadata before its reply: past this long
# without either, the data goes anyway (and such a server takes it as before)
GRANT_WAIT_S = 5.0


class _HeldAfterHeader:
    """A request stream that yields its first message (the header), then waits for `decide`."""

    def __init__(self, messages: Iterator[Any], wait_s: float) -> None:
        self._messages, self._wait_s = messages, wait_s
        self._decided = threading.Event()
        self._send_data = True

    def __iter__(self) -> Iterator[Any]:
        header = next(self._messages, None)
        if header is None:
            return
        yield header
        self._decided.wait(self._wait_s)
        if self._send_data:
            yield from self._messages

    def decide(self, send_data: bool) -> None:
        self._send_data = send_data
        self._decided.set()


def submit_when_granted(submit: grpc.StreamUnaryMultiCallable, messages: Iterator[Any], timeout_s: float,
                        grant_wait_s: float = GRANT_WAIT_S) -> Any:
    """Send `messages` (header first) on `submit` (SubmitUpdate), the data only after the server's
    grant; the reply, or the call's `grpc.RpcError` (a refusal carries its trailers)."""
    held = _HeldAfterHeader(messages, grant_wait_s)
    call = submit.future(iter(held), timeout=timeout_s)
    try:
        # initial metadata before the status is the grant; a call refused at once ends with none
        held.decide(bool(call.initial_metadata()))
        return call.result()
    except BaseException:
        call.cancel()  # nothing once the call has ended
        raise
    finally:
        held.decide(False)  # nothing more to send after the call ended (or this thread was interrupted)
