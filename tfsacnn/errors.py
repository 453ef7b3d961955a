"""Exceptions that CLIs turn into one-line errors and exit code 2."""


class TfsacnnError(Exception):
    """Base class: the message is printed as `error: <message>`."""


class DataError(TfsacnnError):
    """Bad or unreadable input data (names the file and the problem)."""


class ConfigError(TfsacnnError):
    """Bad config: unknown keys, bad types, missing files."""


def run_cli(fn, *args, path=None):
    """Call `fn(*args)`; turn a TfsacnnError or OSError into one stderr line and code 2.

    Returns the exit code (0 on success). `path` names the file in an OSError without one.
    """
    import sys

    try:
        fn(*args)
    except TfsacnnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or path}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0
