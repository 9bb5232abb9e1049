"""Typed errors. Each CLI turns them into a one-line message; the servicer into status codes."""


class FedserError(Exception):
    """Base class of every error fedser raises on purpose."""


class ConfigError(FedserError):
    """A configuration value is missing, malformed or out of range."""


class DataError(FedserError):
    """A data directory, labels file or audio file cannot be used."""


class CorruptBlobError(FedserError):
    """A streamed tensor blob has the wrong length, a bad checksum or cannot be parsed."""


class InvalidUpdateError(FedserError):
    """A client update does not match the expected tensor names, shapes, dtypes or values."""


class StateError(FedserError):
    """A state directory cannot be read or written."""
