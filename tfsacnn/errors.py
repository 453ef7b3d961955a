"""Exceptions that CLIs turn into one-line errors and exit code 2."""


class TfsacnnError(Exception):
    """Base class: the message is printed as `error: <message>`."""


class DataError(TfsacnnError):
    """Bad or unreadable input data (names the file and the problem)."""


class ConfigError(TfsacnnError):
    """Bad config: unknown keys, bad types, missing files."""
