"""`tfsacnn insilico --run RUN`: the classic V1 experiments on a trained run's neurons.

    tfsacnn insilico --run RUN [--data DIR] [--neurons 0:8] [--experiments rf,size]
        [--out DIR] [--tensorboard LOGDIR] [--settings FILE.yaml]

Stimuli (gratings, discs, annuli) are drawn on the dataset's source pixel scale on its
mean grey and pass through its recorded preprocessing. Experiments (docs/insilico.md):
rf, grating, size, contrast_surround, mei, surround_mei (each runs what it needs; the
MEIs are the slow ones: --mei-steps, --mei-seeds). On a simulated site
(DATA/ground_truth.npz) every experiment also runs on the simulator's noise-free
neurons, and insilico.json reports how well the model recovers them.
Writes RUN/insilico/ (or --out): insilico.json, neurons.csv, curves.npz, PNG pages.
Errors are one line, `error: <what>: <problem>`, exit status 2.
"""
import argparse
import sys

from tfsacnn.errors import OneLineParser, add_output_flags, int_at_least, run_cli


def build_parser():
    p = OneLineParser(prog="tfsacnn insilico", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, metavar="RUN_DIR",
                   help="run directory (holds model.keras)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="dataset directory (default: the run's data.dir)")
    p.add_argument("--neurons", default=None,
                   help="dataset neuron indices, e.g. 0:8 or 1,5,7 (default: all of the run's)")
    p.add_argument("--experiments", default=None,
                   help="comma-separated experiments (default: all registered)")
    p.add_argument("--split", default="val",
                   help="the dataset split whose images give the mean grey, the norm, the "
                        "best responses and the RF map")
    p.add_argument("--settings", default=None, metavar="FILE.yaml",
                   help="YAML overriding docs/insilico.md's defaults, e.g. "
                        "{size: {diameters: 16}, contrast: 0.8}")
    p.add_argument("--mei-steps", type=int_at_least(1), default=None,
                   help="MEI ascent steps (settings mei.steps; default 1000)")
    p.add_argument("--mei-seeds", type=int_at_least(1), default=None,
                   help="MEI random starts per neuron (settings mei.seeds; default 4)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (default: RUN_DIR/insilico)")
    p.add_argument("--tensorboard", default=None, metavar="LOGDIR",
                   help="also log the pictures as TensorBoard images here")
    p.add_argument("--step", type=int_at_least(0), default=0, help="TensorBoard step")
    add_output_flags(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)

    def run():
        from tfsacnn.quiet import quiet_tensorflow

        quiet_tensorflow(args.verbose)      # before anything imports TensorFlow
        from tfsacnn.files import read_yaml
        from tfsacnn.insilico.run import insilico

        settings = read_yaml(args.settings) if args.settings else None
        for key in ("steps", "seeds"):
            value = getattr(args, f"mei_{key}")
            if value is not None:
                settings = dict(settings or {})
                settings["mei"] = {**(settings.get("mei") or {}), key: value}
        insilico(args.run, data_dir=args.data, neurons=args.neurons,
                 experiments=args.experiments, out=args.out, tensorboard=args.tensorboard,
                 settings=settings, step=args.step, split=args.split,
                 log=(lambda *a, **k: None) if args.quiet else print)

    return run_cli(run, path=args.out or args.run)


if __name__ == "__main__":
    sys.exit(main())
