"""Exceptions that CLIs turn into one-line errors and exit code 2, and the CLI helpers."""
import argparse
import sys


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
    try:
        fn(*args)
    except TfsacnnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or path}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too: `error: <arg>: <problem>`, exit 2."""

    def error(self, message):
        print(f"error: {message.removeprefix('argument ')}", file=sys.stderr)
        raise SystemExit(2)


def int_at_least(lo):
    """argparse type: an integer >= lo."""
    def conv(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v
    return conv
