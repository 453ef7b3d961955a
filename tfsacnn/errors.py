"""Exceptions that CLIs turn into one-line errors and exit code 2, and the CLI helpers."""
import argparse
import contextlib
import sys


class TfsacnnError(Exception):
    """Base class: the message is printed as `error: <message>`."""


class DataError(TfsacnnError):
    """Bad or unreadable input data (names the file and the problem)."""


class ConfigError(TfsacnnError):
    """Bad config: unknown keys, bad types, missing files."""


INTERRUPTED = 130   # the shell's code for a process ended by Ctrl-C (128 + SIGINT)


TENSORFLOW_WHEEL = "tensorflow==2.21.0"   # the pin of pyproject.toml


def require_tensorflow(command):
    """Check, without importing it, that TensorFlow can be imported for `command` (e.g.
    "tfsacnn export"); else a TfsacnnError saying in one line how to install it."""
    import importlib.util

    try:
        found = importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise TfsacnnError(f"{command} needs TensorFlow, which is not installed here (a "
                           f"JAX-only machine?): pip install {TENSORFLOW_WHEEL} (on NVIDIA "
                           f"GPUs: pip install 'tfsacnn[gpu]')")


def run_cli(fn, *args, path=None):
    """Call `fn(*args)`; turn a TfsacnnError or OSError into one stderr line and code 2,
    and Ctrl-C (KeyboardInterrupt) into `error: interrupted` and code 130.

    Returns the exit code (0 on success). `path` names the file in an OSError without one.
    Open progress bars are closed first, so the error starts a line of its own.
    """
    try:
        fn(*args)
    except KeyboardInterrupt:
        _error("interrupted (Ctrl-C)")
        return INTERRUPTED
    except TfsacnnError as e:
        _error(str(e))
        return 2
    except OSError as e:
        where = e.filename if e.filename is not None else path
        problem = e.strerror or str(e)
        _error(problem if where is None else f"{where}: {problem}")
        return 2
    return 0


def _error(message):
    from .progress import end_bars

    end_bars()
    message = "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f"error: {message}", file=sys.stderr, flush=True)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help keeps the description's layout and shows each option's default.

    An option whose help already says "(default..." is left alone; so are defaults of
    None or False (the help says what happens without the option).
    """

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("(default" in text or "%(default)" in text or not action.option_strings
                or default is None or default is False or default == argparse.SUPPRESS
                or action.required or default == []):
            return text
        return f"{text} (default: %(default)s)"


_command = []   # the name `tfsacnn <command>` runs a module's main() under (`command_name`)


@contextlib.contextmanager
def command_name(name):
    """While active, every OneLineParser's prog is `name` (e.g. "tfsacnn fit"), so --help
    and usage errors show the command the user typed, not `python -m <module>`."""
    _command.append(name)
    try:
        yield
    finally:
        _command.pop()


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too: `error: <arg>: <problem>`, exit 2.

    --help shows every option's default (`HelpFormatter`; a plain or RawDescription
    formatter_class is upgraded to it). Under `command_name(name)`, prog is `name`.
    """

    def __init__(self, *args, **kwargs):
        if _command and str(kwargs.get("prog", "")).startswith("python -m "):
            kwargs["prog"] = _command[-1]     # a module's own name; sub-parsers keep theirs
        if kwargs.get("formatter_class") in (None, argparse.HelpFormatter,
                                             argparse.RawDescriptionHelpFormatter):
            kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)

    def error(self, message):
        _error(message.removeprefix("argument "))
        raise SystemExit(2)


class DeprecatedAlias(argparse.Action):
    """A hidden old spelling of an option: it sets the new option's `dest` and says so once.

        p.add_argument("--top", dest="top_k", type=int, new="--top-k", action=DeprecatedAlias)
    """

    def __init__(self, option_strings, dest, new, **kwargs):
        kwargs.setdefault("help", argparse.SUPPRESS)
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_output_flags(parser):
    """--quiet and --verbose, the same on every command that prints."""
    parser.add_argument("--quiet", action="store_true",
                        help="print only errors (no progress, no result lines)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's start-up messages (absl, oneDNN, CUDA)")


def split_name(text):
    """argparse type of --split: a non-empty name (an empty one would mean the default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a split name (train, val, test, ...), got ''")
    return text


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
