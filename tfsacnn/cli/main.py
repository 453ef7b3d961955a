"""The `tfsacnn` command: `tfsacnn <command> [options]`, one subcommand per tool.

Each subcommand is the same program as `python -m <module>` with the same options
(`tfsacnn fit --help` is `python -m tfsacnn.fit --help`).
"""
import importlib
import sys

# command -> (module whose main(argv) runs it, one-line description)
COMMANDS = {
    "fit": ("tfsacnn.cli.fit", "train a config (no arguments: the demo)"),
    "evaluate": ("tfsacnn.evaluation.evaluate", "recompute a run's metrics from its SavedModel"),
    "compare": ("tfsacnn.evaluation.compare", "compare runs in a table like the paper's Table 1"),
    "analyze": ("tfsacnn.evaluation.analyze", "tuning curves, readout split, attention maps"),
    "insilico": ("tfsacnn.cli.insilico", "in-silico V1 experiments (RF, gratings, size, surround)"),
    "export": ("tfsacnn.export", "write a run's SavedModel from its model.keras"),
    "import-torch": ("tfsacnn.cli.import_torch", "import the paper's PyTorch checkpoints"),
    "bench": ("tfsacnn.bench", "speed and memory benchmarks"),
    "data": (None, "datasets: `tfsacnn data build` or `tfsacnn data synthesize`"),
}
DATA_COMMANDS = {
    "build": ("data_prep.build_tfrecords", "your stimuli and responses -> TFRecord shards"),
    "synthesize": ("data_prep.synthesize", "a simulated V1 site as a dataset"),
}


def usage(table, prog):
    width = max(map(len, table))
    lines = [f"usage: {prog} <command> [options]   ({prog} <command> --help)", "", "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in table.items()]
    return "\n".join(lines)


def dispatch(table, argv, prog):
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(table, prog))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in table:
        print(f"error: {prog}: unknown command {name!r} (one of: {', '.join(table)})",
              file=sys.stderr)
        return 2
    if name == "data" and table is COMMANDS:
        return dispatch(DATA_COMMANDS, rest, f"{prog} data")
    module = importlib.import_module(table[name][0])
    sys.argv[0] = f"{prog} {name}"
    return module.main(rest) or 0


def main(argv=None):
    return dispatch(COMMANDS, sys.argv[1:] if argv is None else list(argv), "tfsacnn")


if __name__ == "__main__":
    sys.exit(main())
