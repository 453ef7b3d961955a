"""Progress bars for long work (tqdm on stderr; silent when disabled)."""
import sys

from tqdm.auto import tqdm


def progress_bar(total=None, desc=None, disable=False, unit="step"):
    """A tqdm bar on stderr that leaves no trace in logs when stderr is not a terminal."""
    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, disable=disable, unit=unit, file=sys.stderr,
                leave=tty, dynamic_ncols=True, mininterval=0.5 if tty else 30)
