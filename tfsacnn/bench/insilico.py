"""`python -m tfsacnn.bench insilico`: time the in-silico grating battery (tfsacnn.insilico).

Builds an independent-core model (`--model`, default ff_sa_cnn, random weights) for
`--neurons` neurons and runs the grating battery on it: the optimal grating (grid,
position scans, orientation and SF curves), size tuning and the orientation-contrast
surround, with docs/insilico.md's default settings; the RF map (reverse correlation on
a dataset) is replaced by the image centre. Every neuron's stimuli are centred on its
own RF (`Twin.predict_own`). Reports the wall time after a warm-up call, the stimuli
per neuron, and the time one stimulus set of all neurons takes; `naive_s` estimates the
same battery with one image per neuron through the shared-input model (n times the work).
With `--mei-steps` > 0 it also times the MEIs (tfsacnn.insilico.mei, one seed per
neuron, docs/insilico_mei.md's settings otherwise): `mei_s` for `--mei-steps` steps after
a compiling call, `mei_step_s` per step, `mei_cpu_s` the process CPU time (the wall time
grows on a shared machine; the CPU time much less), and `mei_1000_steps_s` extrapolated
to the default 1000 steps. Prints one JSON line.
"""
from __future__ import annotations

import json
import time

import numpy as np

from tfsacnn.errors import int_at_least


def add_arguments(parser) -> None:
    """Flags of the `insilico` subcommand."""
    parser.add_argument("--neurons", type=int_at_least(1), default=64, help="neurons")
    parser.add_argument("--model", default="ff_sa_cnn", help="model variant")
    parser.add_argument("--batch-size", type=int_at_least(1), default=None,
                        help="stimulus sets per forward call (default: from the neuron count)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--mei-steps", type=int_at_least(0), default=50,
                        help="MEI ascent steps to time, one seed per neuron (0: no MEI timing)")
    parser.add_argument("--skip-gratings", action="store_true",
                        help="time only the MEIs")


def bench_twin(model_name, n, seed=0, batch_size=None):
    """A `Twin` of a random independent model on a 50x50 [0, 1] stimulus space."""
    from tfsacnn import models
    from tfsacnn.insilico.forward import Pipeline, Twin

    m = models.build(model_name, n_neurons=n, dropout=0.0, seed=seed)
    twin = Twin(m, np.arange(n), Pipeline(None, (50, 50), 50), 0.5, (0.0, 1.0), 10.0,
                batch_size=batch_size, neuron_ids=[str(i) for i in range(n)])
    return twin


class _Counting:
    """Wraps a system and counts the stimulus sets it answers."""

    def __init__(self, system):
        self.system, self.sets = system, 0

    def predict(self, raw):
        self.sets += len(raw)
        return self.system.predict(raw)

    def predict_own(self, raw):
        self.sets += len(raw)
        return self.system.predict_own(raw)


def grating_battery(twin, system=None):
    """Run grating, size and contrast_surround with the RF at the image centre.
    -> (results, stimulus sets answered)."""
    from tfsacnn.insilico.experiments import EXPERIMENTS, Context, merge_settings

    counting = _Counting(system or twin)
    ctx = Context(twin, counting, merge_settings())
    h, w = twin.image_shape
    n = twin.n
    ctx.results["rf"] = {"per_neuron": {"rf_x": np.full(n, (w - 1) / 2),
                                        "rf_y": np.full(n, (h - 1) / 2),
                                        "rf_diameter": np.full(n, 12.0)}}
    for name in ("grating", "size", "contrast_surround"):
        ctx.results[name] = EXPERIMENTS[name](ctx)
    return ctx.results, counting.sets


def main(args) -> dict:
    import keras

    from tfsacnn import models
    from tfsacnn.errors import ConfigError

    if args.model not in models.names():
        raise ConfigError(f"--model: unknown model {args.model!r}; known: "
                          f"{', '.join(models.names())}")

    twin = bench_twin(args.model, args.neurons, args.seed, args.batch_size)
    what = [w for w, on in (("grating battery", not args.skip_gratings),
                            ("MEIs", args.mei_steps > 0)) if on]
    result = {"benchmark": "insilico", "what": " and ".join(what) or "nothing",
              "model": args.model,
              "core": "independent", "neurons": twin.n, "backend": keras.backend.backend()}
    if not args.skip_gratings:
        result.update(time_gratings(twin))
    if args.mei_steps:
        result.update(time_meis(twin, args.mei_steps))
    print(json.dumps(result))
    return result


def time_gratings(twin):
    """Seconds of the grating battery (after a compiling call) and the naive estimate."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8, twin.n, 50, 50)).astype(np.float32)
    twin.predict_own(x)                                  # warm-up: compile
    t = time.perf_counter()
    _, sets = grating_battery(twin)
    seconds = time.perf_counter() - t
    # shared-input model, one neuron's image at a time: n forward passes per stimulus set
    one = x[:, 0]
    twin.predict(one)
    t = time.perf_counter()
    twin.predict(one)
    per_image = (time.perf_counter() - t) / len(one)
    return {"stimulus_sets": int(sets), "seconds": round(seconds, 2),
            "seconds_per_set": round(seconds / max(sets, 1), 4),
            "naive_s": round(per_image * sets * twin.n, 1)}


def time_meis(twin, steps):
    """Seconds of `steps` MEI steps, one seed per neuron, after a compiling call."""
    from tfsacnn.insilico import mei

    vg = mei.twin_value_and_grad(twin)
    x = np.full((1, twin.n) + tuple(twin.image_shape), twin.mean_grey, np.float32)
    vg(x, np.ones((1, twin.n), np.float32))              # compile
    cfg = mei.MEIConfig(steps=steps, seeds=1)
    t, cpu = time.perf_counter(), time.process_time()
    res = mei.compute_meis(twin, cfg, vg=vg)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    return {"mei_steps": steps, "mei_s": round(wall, 2), "mei_step_s": round(wall / steps, 4),
            "mei_cpu_s": round(cpu, 2),
            "mei_1000_steps_s": round(wall / steps * 1000, 1),
            "mei_response_gain": round(float(np.median(
                res.response - twin.predict_own(x)[0])), 4)}
