"""Import the paper's trained PyTorch checkpoints (lucanren/sacnn) as a tfsacnn run.

    python -m tfsacnn.import_torch --model ff_sa_cnn --pth neuron_0.pth neuron_1.pth ...
        --out RUN_DIR [--overwrite]
    python -m tfsacnn.import_torch --model ff_sa_cnn --pth avg_0_50.pth --out RUN_DIR

Writes RUN_DIR/model.keras, RUN_DIR/saved_model/ (endpoints `serve`, and `attention` for
SA models) and RUN_DIR/config.yaml; `python -m tfsacnn.evaluate --run RUN_DIR --data DIR`
then computes metrics.json. Needs `pip install tfsacnn[torch]`. See tfsacnn.interop for
what is converted. Errors: `error: <file>: <problem>` on one line, exit code 2.
"""
import sys

from ..errors import OneLineParser, add_output_flags, run_cli

# Kept here (not imported from interop) so that --help does not import TensorFlow.
SUPPORTED = ("ff_cnn", "ff_sa_cnn", "rf_cnn", "rf_sa_cnn", "ff_sa_cnn_star",
             "rf_sa_cnn_star", "ff_sa_cnn_star_fc1")


def parse_args(argv=None):
    p = OneLineParser(
        prog="python -m tfsacnn.import_torch",
        description="Import the paper's PyTorch checkpoints (neuron_{i}.pth, one network "
                    "each, or avg_{start}_{end}.pth) into a tfsacnn run directory.")
    p.add_argument("--model", required=True, choices=SUPPORTED,
                   help="the variant the checkpoints were trained as")
    p.add_argument("--pth", required=True, nargs="+", metavar="FILE",
                   help="neuron_{i}.pth files in neuron order, or avg_*.pth site checkpoints")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing RUN_DIR")
    add_output_flags(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    def write():
        from .. import interop
        from ..errors import require_tensorflow
        from ..quiet import quiet_tensorflow

        require_tensorflow("tfsacnn import-torch (it writes RUN/saved_model)")
        quiet_tensorflow(args.verbose)
        out = interop.write_run(args.model, args.pth, args.out, overwrite=args.overwrite)
        if not args.quiet:
            print(f"wrote {out} ({args.model}, from {len(args.pth)} file(s))")

    return run_cli(write, path=args.out)


if __name__ == "__main__":
    sys.exit(main())
