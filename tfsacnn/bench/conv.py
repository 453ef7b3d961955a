"""`tfsacnn bench conv`: a short timed trial of the per-neuron convolution's implementations.

Times tfsacnn's full training step (`tfsacnn.bench.train`) with each of NeuronConv2D's
implementations (`grouped`: one grouped convolution; `map`: one dense convolution per
neuron) on `--device`, and prints one JSON line: neuron_images_per_s of each, and `choice`,
the fastest. `--env-file FILE` also writes `TFSACNN_CONV_IMPLEMENTATION=<choice>`, which
NeuronConv2D's `"auto"` then runs (e.g. `set -a; . FILE; set +a` in a script), so the
choice changes no config: every implementation computes the same function with the same
weights.
"""
import argparse
import json

from ..errors import int_at_least
from ..files import write_text
from . import train

IMPLEMENTATIONS = ("grouped", "map")


def add_arguments(p):
    pos = int_at_least(1)
    p.add_argument("--model", default="ff_sa_cnn", help="a tfsacnn.models variant")
    p.add_argument("--neurons", type=pos, default=12, help="neurons trained together")
    p.add_argument("--batch-size", type=pos, default=50, help="images per step")
    p.add_argument("--steps", type=pos, default=5, help="timed steps per implementation")
    p.add_argument("--warmup", type=int_at_least(0), default=2,
                   help="untimed steps first (compilation)")
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="auto",
                   help="where to run (gpu: refused when none is visible or a CPU ran it)")
    p.add_argument("--env-file", help="also write TFSACNN_CONV_IMPLEMENTATION=<choice> here")


def main(args):
    from ..nn.layers import CONV_IMPLEMENTATION_ENV  # imports Keras: not at --help

    trial = argparse.Namespace(model=args.model, neurons=args.neurons,
                               batch_size=args.batch_size, steps=args.steps,
                               warmup=args.warmup, core="independent", device=args.device,
                               baseline="none", precision="float32", threads=0)
    train.check_args(trial)
    rates, ran_on = {}, ""
    for impl in IMPLEMENTATIONS:
        step_s, ran_on = train.time_steps(argparse.Namespace(**vars(trial),
                                                             conv_implementation=impl))
        train.check_ran_on(trial, ("tfsacnn", ran_on))
        rates[impl] = round(args.neurons * args.batch_size / step_s, 1)
    choice = max(rates, key=rates.get)
    out = {"model": args.model, "n_neurons": args.neurons, "batch_size": args.batch_size,
           "device": trial.device, "tfsacnn_device": ran_on,
           "neuron_images_per_s": rates, "choice": choice}
    if args.env_file:
        write_text(args.env_file, f"{CONV_IMPLEMENTATION_ENV}={choice}\n")
        out["env_file"] = args.env_file
    print(json.dumps(out))
    return out
