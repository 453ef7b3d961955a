"""What the CLIs print while they work: progress bars (tqdm on stderr) and score lines.

Every bar comes from `progress_bar`, which keeps a list of the open ones, so `end_bars()`
(called by `tfsacnn.errors.run_cli` before it prints an error) can close them and end
their line: an error is always a line of its own, never glued to a bar.
"""
import sys
import weakref

from tqdm.auto import tqdm

_open = weakref.WeakSet()    # bars made here and not closed yet
_silent = False              # set by silence(): --quiet


def silence(on=True):
    """--quiet: every later bar is disabled."""
    global _silent
    _silent = bool(on)


class _Bar(tqdm):
    """tqdm that leaves the set of open bars when it closes."""

    def close(self):
        _open.discard(self)
        super().close()


def progress_bar(total=None, desc=None, disable=None, unit="step", leave=None):
    """A tqdm bar on stderr. disable=None: shown only when stderr is a terminal (no log noise);
    leave=None: the finished bar stays on a terminal and is cleared elsewhere."""
    tty = sys.stderr.isatty()
    disable = _silent or ((not tty) if disable is None else disable)
    bar = _Bar(total=total, desc=desc, disable=disable,
               unit=unit, file=sys.stderr, leave=tty if leave is None else leave,
               dynamic_ncols=True, mininterval=0.5 if tty else 30)
    if not bar.disable:
        _open.add(bar)
    return bar


def end_bars():
    """Close every open bar and make sure stderr is at the start of a fresh line."""
    bars = list(_open)
    for bar in bars:
        bar.close()
    if bars:
        if not sys.stderr.isatty():   # a log file keeps the '\r'-separated bar text: end it
            sys.stderr.write("\n")
        sys.stderr.flush()


def percent(value, digits=1):
    """A fraction as a percentage string ("12.3"); "nan" for None or NaN."""
    return "nan" if value is None or value != value else f"{100 * value:.{digits}f}"


def score_line(mean):
    """One line of a split's mean scores: CORR as r, PT_J, PT_S and TOP in percent.

    `mean`: a metrics.json `mean` entry (`corr`, `pt_j`, `pt_s`, optional `top_overlap`,
    `peak_height`, `n_nan`).
    """
    corr = mean.get("corr")
    parts = [f"corr {'nan' if corr is None or corr != corr else f'{corr:.3f}'}",
             f"PT_J {percent(mean.get('pt_j'))}%", f"PT_S {percent(mean.get('pt_s'))}%"]
    if "top_overlap" in mean:
        parts.append(f"TOP {percent(mean['top_overlap'])}%")
    if "peak_height" in mean:
        h = mean["peak_height"]
        parts.append(f"peak height {'nan' if h is None or h != h else f'{h:.3f}'}")
    if mean.get("n_nan"):
        parts.append(f"({mean['n_nan']} NaN)")
    return "  ".join(parts)
