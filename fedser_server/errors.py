"""Server-side errors; the servicer maps each to a gRPC status code."""

from fedser_shared.errors import FedserError, InvalidUpdateError


class AuthenticationError(FedserError):
    """The enrolment token is missing, unknown or revoked."""


class SessionExpiredError(FedserError):
    """The session credential was valid but has ended (silence, leave, unresponsive): join again."""


class UnknownClientError(FedserError):
    """The caller is not a registered client, or its session credential is wrong."""


class NotParticipatingError(FedserError):
    """The client is not sampled for this round, or the task is of another kind."""


class StaleRoundError(FedserError):
    """The request names a round or task that is no longer (or not yet) open."""


class ProtocolMismatchError(FedserError):
    """The client speaks another protocol version."""


class InvalidRequestError(FedserError):
    """A request field is out of range (a count, a name, a length)."""


class ServerStoppingError(FedserError):
    """The server is going away before the run ended; clients retry and reconnect."""


class NormBoundError(InvalidUpdateError):
    """An update moves the model further than the configured norm bound allows."""
