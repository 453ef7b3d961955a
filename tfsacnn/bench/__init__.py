"""Benchmarks: `python -m tfsacnn.bench <subcommand>` (each prints one JSON line).

    python -m tfsacnn.bench train    training-step speed (tfsacnn.bench.train)
    python -m tfsacnn.bench data     TFRecord write/read speed (tfsacnn.bench.data)

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
    from tfsacnn.bench import data as bench_data, train as bench_train

    p = OneLineParser(prog="python -m tfsacnn.bench", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="training-step speed", description=bench_train.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_train.add_arguments(train)
    train.set_defaults(run=bench_train.main)
    data = sub.add_parser("data", help="TFRecord write/read speed", description=bench_data.__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_data.add_arguments(data)
    data.set_defaults(run=bench_data.main)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return run_cli(args.run, args)


if __name__ == "__main__":
    sys.exit(main())
