"""The one hierarchy of typed errors. Each CLI turns them into a one-line message; the gRPC
servicer into a status code, with `reason` (the refusal key, docs/protocol.md) in the call's
trailing metadata and in the refusal counters."""

from typing import ClassVar


class FedserError(Exception):
    """Base class of every error fedser raises on purpose."""

    reason: ClassVar[str] = "refused"


class ConfigError(FedserError):
    """A configuration value is missing, malformed or out of range."""

    reason = "config"


class DataError(FedserError):
    """A data directory, labels file or audio file cannot be used."""

    reason = "data"


class CorruptBlobError(FedserError):
    """A streamed tensor blob has the wrong length, a bad checksum or cannot be parsed."""

    reason = "corrupt_blob"


class InvalidUpdateError(FedserError):
    """A client update does not match the expected tensor names, shapes, dtypes or values."""

    reason = "invalid_update"


class StateError(FedserError):
    """A state directory cannot be read or written."""

    reason = "state"


class CorruptStateError(StateError):
    """A saved state file (checkpoint, registry, a client's c_i) fails its integrity check."""

    reason = "corrupt_state"


# ---- refusals of client calls (the servicer maps each to a status code)

class AuthenticationError(FedserError):
    """The enrolment token is missing, unknown or revoked."""

    reason = "authentication"


class SessionExpiredError(FedserError):
    """The session credential was valid but has ended (silence, leave, unresponsive): join again."""

    reason = "session_expired"


class UnknownClientError(FedserError):
    """The caller is not a registered client, or its session credential is wrong."""

    reason = "unknown_client"


class NotParticipatingError(FedserError):
    """The client is not sampled for this round, or the task is of another kind."""

    reason = "not_participating"


class StaleRoundError(FedserError):
    """The request names a round or task that is no longer (or not yet) open."""

    reason = "stale_round"


class ProtocolMismatchError(FedserError):
    """The client speaks another protocol version."""

    reason = "protocol_mismatch"


class InvalidRequestError(FedserError):
    """A request field is out of range (a count, a name, a length)."""

    reason = "invalid_request"


class ServerStoppingError(FedserError):
    """The server is going away before the run ended; clients retry and reconnect."""

    reason = "server_stopping"


class ServerBusyError(FedserError):
    """The server cannot take the call now; the client retries later."""

    reason = "server_busy"


class UploadSlotsBusyError(ServerBusyError):
    """Every upload slot is taken: the client sends its update again after `retry_after_s` (the
    call's `fedser-retry-after-ms` trailer). The stream is refused at once, never parked."""

    reason = "upload_slots_busy"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NormBoundError(InvalidUpdateError):
    """An update moves the model further than the configured norm bound allows."""

    reason = "norm_bound"


class ClientCancelledError(FedserError):
    """The client went away (cancelled, died, cut off) in the middle of an upload."""

    reason = "cancelled"


class TooManyUnauthenticatedError(ServerBusyError):
    """Too many update streams are open that have not yet sent their (authenticated) header."""

    reason = "unauthenticated_streams"


class HeaderTimeoutError(FedserError):
    """An update stream did not send its header within the server's limit."""

    reason = "header_timeout"


class DiskFullError(FedserError):
    """The server has no disk space left to park an incoming update; the client retries later."""

    reason = "disk_full"


class SmallUpdateTooLargeError(InvalidUpdateError):
    """A SubmitSmallUpdate above the run's inline limit: stream it with SubmitUpdate."""

    reason = "small_update_too_large"


# ---- secure aggregation (fedser_shared.secagg; docs/privacy.md)

class SecAggError(FedserError):
    """A secure-aggregation message or round cannot be used."""

    reason = "secagg"


class MalformedShareError(SecAggError):
    """A key advertisement, an encrypted share or an unmasking reply is malformed or does not check out."""

    reason = "invalid_share"


class MaskedInputError(SecAggError):
    """A masked input has the wrong length or type."""

    reason = "invalid_masked_input"


class SecAggStageError(SecAggError):
    """A secure-aggregation message came in the wrong stage, twice, or from a client not expected in it."""

    reason = "secagg_stage"


class UnmaskRefusedError(FedserError):
    """A client refuses an unmasking request (e.g. it asks for both secrets of one peer): the
    client's own check, never a server's refusal."""

    reason = "unmask_refused"


class BelowThresholdError(SecAggError):
    """Too few clients are left to unmask the round: it is retried, never partly unmasked."""

    reason = "below_threshold"


class SumOutOfBoundsError(SecAggError):
    """The unmasked sum is not what the clients' bounds allow: the round is refused."""

    reason = "secagg_sum"
