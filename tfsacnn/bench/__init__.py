"""Benchmarks: `python -m tfsacnn.bench <subcommand>` (each prints one JSON line).

    python -m tfsacnn.bench train    training-step speed (tfsacnn.bench.train)
    python -m tfsacnn.bench data     TFRecord write/read speed (tfsacnn.bench.data)
    python -m tfsacnn.bench insilico in-silico experiment speed (tfsacnn.bench.insilico)

Errors (bad flags, unknown model, no GPU for --device gpu): `error: <arg>: <problem>` on
one line, exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfsacnn.errors import OneLineParser, run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    from tfsacnn.bench import data as bench_data, insilico as bench_insilico, train as bench_train

    p = OneLineParser(prog="python -m tfsacnn.bench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, module, what in (("train", bench_train, "training-step speed"),
                               ("data", bench_data, "TFRecord write/read speed"),
                               ("insilico", bench_insilico, "in-silico experiment speed")):
        cmd = sub.add_parser(name, help=what, description=module.__doc__)
        module.add_arguments(cmd)
        cmd.add_argument("--quiet", action="store_true",
                         help="print only errors (not even the JSON result line)")
        cmd.add_argument("--verbose", action="store_true",
                         help="also show TensorFlow's start-up messages (absl, oneDNN, CUDA)")
        cmd.set_defaults(run=module.main)
    return p


def main(argv=None) -> int:
    import contextlib

    from tfsacnn.quiet import quiet_tensorflow

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)

    def run():
        quiet_tensorflow(args.verbose)
        if not args.quiet:
            return args.run(args)
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            return args.run(args)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
