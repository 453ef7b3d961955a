"""Write a simulated V1 recording site whose responses depend on the receptive-field surround.

    python -m data_prep.synthesize --out DATA/synth
    python -m data_prep.synthesize --out DATA/tiny --neurons 8 --train 1000 --val 200 --seed 1
    python -m data_prep.synthesize --out DATA/gated --surround-model gated

Stimuli are procedural natural-like images (data_prep.stimuli: dead leaves at many
scales with a ~1/f^2 spectrum, texture patches, contours through the centre, luminance
and contrast variation), or real image files with --images DIR (read and resized
like build_tfrecords does). The model neurons (data_prep.v1_model) have a classical
receptive field near the image centre; a --surround-fraction of them are modulated by
the image outside it (iso-orientation divisive suppression and collinear
facilitation; with --surround-model gated, suppression gated by how well the
surround's orientations match the centre's), the rest are controls. Train responses are single noisy trials; val
(and test) have --repeats trials per image and the target is their mean.

The dataset goes through data_prep.writer (same shards and manifest as
build_tfrecords) plus DIR/ground_truth.npz: noise-free responses of every split, the
neurons' parameters (has_surround, surround_strength, ...) and the noise ceiling.
`data_prep.v1_model.responses(images, load_params(DIR/"ground_truth.npz"))` gives
noise-free responses for any other images. Same --seed, same bytes.
Bad arguments: one line `error: ...` on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from data_prep import stimuli, v1_model  # noqa: E402
from data_prep.writer import check_dataset_out  # noqa: E402
from tfsacnn.errors import (ConfigError, DataError, OneLineParser, add_output_flags,  # noqa: E402
                            int_at_least, run_cli)


__all__ = ["synthesize", "response_statistics", "statistics_summary", "generate_site", "main",
           "build_parser", "REAL_RANGES"]

#: Ranges the medians over neurons must fall in (from the real M1S1 sample in data_prep/reference).
REAL_RANGES = {
    "frac_above_half_peak": (0.002, 0.02),
    "excess_kurtosis": (3.0, 100.0),
    "frac_negative": (0.02, 0.20),
    "mean": (0.03, 0.15),
}
SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- statistics
def response_statistics(responses) -> dict:
    """Per-neuron statistics of (n_images, n_neurons) responses, each a (n,) float64 array:
    ``frac_above_half_peak``, ``excess_kurtosis`` (Fisher, biased), ``frac_negative``, ``mean``."""
    r = np.asarray(responses, np.float64)
    if r.ndim != 2:
        raise ValueError(f"responses must be (n_images, n_neurons); got {r.shape}")
    mean, std = r.mean(0), r.std(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        kurt = ((r - mean) ** 4).mean(0) / std ** 4 - 3.0
    return {"frac_above_half_peak": (r > 0.5 * r.max(0)).mean(0), "excess_kurtosis": kurt,
            "frac_negative": (r < 0).mean(0), "mean": mean}


def statistics_summary(responses) -> dict:
    """Median over neurons of each of ``response_statistics``."""
    return {k: float(np.nanmedian(v)) for k, v in response_statistics(responses).items()}


# --------------------------------------------------------------------------- simulation
def _corr_columns(a, b):
    a = a - a.mean(0)
    b = b - b.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


def _load_real_images(path, counts, size, rng):
    """Real image files (via data_prep.loaders, as build_tfrecords reads them), shuffled
    with ``rng`` and cut into the requested split counts; unit scale [0, 1]."""
    from data_prep import loaders, preprocess

    imgs = loaders.load_images(path, preprocess.Preprocessor(size))
    need = sum(counts.values())
    if len(imgs.ids) < need:
        raise DataError(f"{path}: {len(imgs.ids)} images, but the splits need {need} "
                        f"({', '.join(f'{k} {v}' for k, v in counts.items() if v)}); "
                        "lower --train/--val/--test")
    order = rng.permutation(len(imgs.ids))
    arr = imgs.array / np.float32(imgs.pixel_max)
    out, ids, start = {}, {}, 0
    for name, c in counts.items():
        if c:
            sel = order[start:start + c]
            out[name] = np.ascontiguousarray(arr[sel], np.float32)
            ids[name] = [imgs.ids[i] for i in sel]
            start += c
    return out, ids, imgs.pixel_max


def generate_site(neurons=32, train=5000, val=1000, test=0, repeats=10, size=50, seed=0,
                  surround_fraction=0.7, images=None, log=None, surround_model="fixed"):
    """Simulate a site in memory (no files). Returns a dict with ``splits`` (writer format),
    ``params`` (calibrated), ``noise_free`` per split, ``noise_ceiling`` per repeated split,
    ``crf_only_corr`` (val), ``image_ids`` (real images only), ``pixel_max`` and, for a
    gated surround, ``gate`` per split ((N, n) gate values q, 0 for controls).
    ``surround_model`` "fixed" | "gated" (data_prep.v1_model); the stimuli, neurons and
    noise of the same ``seed`` are the same for both."""
    log = log or (lambda msg: None)
    counts = {"train": int(train), "val": int(val), "test": int(test)}
    ss = np.random.SeedSequence(int(seed))
    s_img, s_neu, s_noise, s_real = ss.spawn(4)
    img_seeds = dict(zip(SPLITS, s_img.spawn(3)))
    noise_seeds = dict(zip(SPLITS, s_noise.spawn(3)))

    t = time.perf_counter()
    ids, pixel_max = None, None
    if images is None:
        imgs = {k: stimuli.natural_images(c, size, np.random.default_rng(img_seeds[k]))
                for k, c in counts.items() if c}
    else:
        imgs, ids, pixel_max = _load_real_images(images, counts, size, np.random.default_rng(s_real))
    log(f"stimuli: {sum(len(v) for v in imgs.values())} images {size}x{size} "
        f"({time.perf_counter() - t:.1f} s)")

    t = time.perf_counter()
    params = v1_model.sample_neurons(int(neurons), size, np.random.default_rng(s_neu), surround_fraction,
                                     surround_model)
    names = [k for k in SPLITS if k in imgs]
    d = {k: v1_model.drives(imgs[k], params) for k in names}
    # calibrate on every generated image (the stimulus ensemble of the "recording")
    params = v1_model.calibrate(params, {q: np.concatenate([d[k][q] for k in names]) for q in d[names[0]]})
    clean = {k: v1_model.combine(d[k], params) for k in names}
    log(f"model: {neurons} neurons, {int(params['has_surround'].sum())} with a surround "
        f"({time.perf_counter() - t:.1f} s)")

    splits, ceiling = {}, {}
    for k in names:
        rng = np.random.default_rng(noise_seeds[k])
        if k == "train":
            resp = v1_model.noisy_trials(clean[k], params, rng, 1)[:, 0]
            splits[k] = {"images": imgs[k], "responses": resp.astype(np.float32)}
        else:
            trials = v1_model.noisy_trials(clean[k], params, rng, int(repeats)).astype(np.float32)
            mean = trials.mean(1)
            splits[k] = {"images": imgs[k], "responses": mean, "repeats": trials}
            ceiling[k] = _corr_columns(mean.astype(np.float64), clean[k])
    crf_only = v1_model.combine(d["val"], params, context=False)
    out = {"splits": splits, "params": params, "noise_free": clean, "noise_ceiling": ceiling,
           "crf_only_corr": _corr_columns(crf_only, clean["val"]), "image_ids": ids,
           "pixel_max": pixel_max}
    if surround_model == "gated":
        out["gate"] = {k: d[k]["gate"] for k in names}
    return out


def _ground_truth_writer(site, seed, size):
    def write(path):
        arrays = {f"{k}_noise_free": v.astype(np.float32) for k, v in site["noise_free"].items()}
        for k, v in site["noise_ceiling"].items():
            arrays["noise_ceiling" if k == "val" else f"noise_ceiling_{k}"] = v
        arrays.update(site["params"])
        arrays.update(crf_only_corr=site["crf_only_corr"], model_version=np.int64(v1_model.MODEL_VERSION),
                      image_size=np.int64(size), seed=np.int64(seed),
                      neuron_ids=np.array([f"n{j:03d}" for j in range(len(site["params"]["x0"]))]))
        if "gate" in site:           # fixed sites keep the bytes they had before the option
            arrays["surround_model"] = np.str_("gated")
            arrays.update({f"{k}_gate": v.astype(np.float32) for k, v in site["gate"].items()})
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    return write


def _rounded(a, nd=4):
    return [None if not np.isfinite(x) else round(float(x), nd) for x in np.asarray(a, np.float64)]


def synthesize(out, neurons=32, train=5000, val=1000, test=0, repeats=10, size=50, seed=0,
               surround_fraction=0.7, images=None, overwrite=False, progress=True, command=None,
               shard_size=10000, surround_model="fixed") -> Path:
    """Simulate a site and write it to ``out`` (shards, manifest.json, ground_truth.npz).

    Raises ConfigError for bad arguments and DataError for an existing ``out`` without
    ``overwrite`` or unusable ``images``. Returns the dataset directory.
    """
    checks = [("neurons", neurons, 1), ("train", train, 1), ("val", val, 1), ("test", test, 0),
              ("repeats", repeats, 1), ("size", size, 32), ("shard_size", shard_size, 1)]
    for name, v, lo in checks:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ConfigError(f"--{name.replace('_', '-')}: must be an integer >= {lo}, got {v!r}")
    if not 0.0 <= float(surround_fraction) <= 1.0:
        raise ConfigError(f"--surround-fraction: must be in [0, 1], got {surround_fraction}")
    if surround_model not in v1_model.SURROUND_MODELS:
        raise ConfigError(f"--surround-model: must be one of {', '.join(v1_model.SURROUND_MODELS)}, "
                          f"got {surround_model!r}")
    out = Path(out)
    check_dataset_out(out, overwrite)
    if images is not None and not Path(images).exists():
        raise DataError(f"{images}: not found")

    def log(msg):
        if progress:
            print(f"synthesize: {msg}", file=sys.stderr, flush=True)

    site = generate_site(neurons, train, val, test, repeats, size, seed, surround_fraction, images, log,
                         surround_model)
    p = site["params"]
    val_stats = statistics_summary(site["splits"]["val"]["responses"])
    summary = {
        "generator": "data_prep.synthesize", "model": "data_prep.v1_model",
        "model_version": v1_model.MODEL_VERSION, "seed": int(seed),
        "stimuli": "procedural (data_prep.stimuli.natural_images)" if images is None else str(images),
        "surround_fraction": float(surround_fraction),
        "n_surround": int(p["has_surround"].sum()),
        "has_surround": [bool(x) for x in p["has_surround"]],
        "surround_strength": _rounded(p["surround_strength"]),
        "noise_ceiling": {"definition": "Pearson r of the repeat-mean target with the noise-free response",
                          **{k: {"per_neuron": _rounded(v), "mean": round(float(np.nanmean(v)), 4)}
                             for k, v in site["noise_ceiling"].items()}},
        "crf_only_corr": {"definition": "val: Pearson r of the noise-free response with the response "
                                        "whose surround terms are fixed at their means",
                          "per_neuron": _rounded(site["crf_only_corr"])},
        "val_statistics_median": {k: round(v, 5) for k, v in val_stats.items()},
        **({"surround_model": "gated", "gate": {
            "offset": v1_model.GATE_OFFSET, "width": v1_model.GATE_WIDTH,
            "val_median_surround_neurons": round(float(np.median(site["gate"]["val"][:, p["has_surround"]])), 4)
            if p["has_surround"].any() else None}} if surround_model == "gated" else {}),
        "ground_truth": "ground_truth.npz",
        "noise_free_responses": "data_prep.v1_model.responses(images, "
                                "data_prep.v1_model.load_params(DIR / 'ground_truth.npz'))",
    }
    if images is None:
        preprocessing = {"steps": ["procedural natural-like images (data_prep.stimuli.natural_images)",
                                   f"generated at {size}x{size}", "float32 on [0, 1]"],
                         "size": int(size), "crop": None, "pixel_max": {"procedural": 1.0}}
        sources = {"synthetic": True}
    else:
        from data_prep import preprocess
        preprocessing = preprocess.describe(int(size), None, {"images": site["pixel_max"]})
        sources = {"synthetic": True, "images": str(Path(images).resolve())}
    normalization = {"method": "unit", "formula": "x / pixel_max (white = 1); values on [0, 1]"}
    extra_files = {"ground_truth.npz": _ground_truth_writer(site, seed, size)}
    if site["image_ids"] is not None:
        ids = site["image_ids"]

        def write_index(path):
            import csv
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["split", "index", "image"])
                for name, lst in ids.items():
                    w.writerows((name, i, x) for i, x in enumerate(lst))
        extra_files["image_index.csv"] = write_index
    if command is None:
        command = "python -m data_prep.synthesize " + shlex.join(
            ["--out", str(out), "--neurons", str(neurons), "--train", str(train), "--val", str(val),
             "--test", str(test), "--repeats", str(repeats), "--size", str(size), "--seed", str(seed),
             "--surround-fraction", str(surround_fraction)] + (["--images", str(images)] if images else [])
            + (["--surround-model", surround_model] if surround_model != "fixed" else []))
    from data_prep.writer import write_dataset  # deferred: imports TensorFlow when writing
    t = time.perf_counter()
    path = write_dataset(out, site["splits"], neuron_ids=[f"n{j:03d}" for j in range(int(neurons))],
                         preprocessing=preprocessing, normalization=normalization,
                         sources=sources, command=command, shard_size=shard_size, overwrite=overwrite,
                         extra_manifest={"synthetic": summary}, extra_files=extra_files,
                         progress=progress and sys.stderr.isatty())
    log(f"wrote {path} ({time.perf_counter() - t:.1f} s); val medians: "
        + ", ".join(f"{k} {v:.4g}" for k, v in val_stats.items()))
    return path


# --------------------------------------------------------------------------- CLI
def _fraction(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m data_prep.synthesize", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="dataset directory to create")
    p.add_argument("--neurons", type=int_at_least(1), default=32, help="model neurons (default 32)")
    p.add_argument("--train", type=int_at_least(1), default=5000,
                   help="train images, one noisy trial each (default 5000)")
    p.add_argument("--val", type=int_at_least(1), default=1000,
                   help="validation images, --repeats trials each (default 1000)")
    p.add_argument("--test", type=int_at_least(0), default=0,
                   help="held-out test images, --repeats trials each (default 0: no test split)")
    p.add_argument("--repeats", type=int_at_least(1), default=10, help="trials per val/test image (default 10)")
    p.add_argument("--size", type=int_at_least(32), default=50, help="image side in pixels, >= 32 (default 50)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="random seed; same seed, same dataset (default 0)")
    p.add_argument("--surround-fraction", type=_fraction, default=0.7,
                   help="fraction of neurons with contextual modulation (default 0.7)")
    p.add_argument("--surround-model", choices=v1_model.SURROUND_MODELS, default="fixed",
                   help="fixed (default): suppression pools tuned to the neuron's orientation; "
                        "gated: suppression gated by how well the surround's orientations match "
                        "the centre's (docs/synthetic_site.md)")
    p.add_argument("--images", type=Path, default=None,
                   help="use real images (directory, .txt list or .npy, as build_tfrecords reads them) "
                        "instead of procedural ones")
    p.add_argument("--shard-size", type=int_at_least(1), default=10000, help="examples per shard (default 10000)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_output_flags(p)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    def write():
        from tfsacnn.quiet import quiet_tensorflow

        quiet_tensorflow(args.verbose)
        out = synthesize(args.out, neurons=args.neurons, train=args.train, val=args.val, test=args.test,
                         repeats=args.repeats, size=args.size, seed=args.seed,
                         surround_fraction=args.surround_fraction, images=args.images,
                         overwrite=args.overwrite, progress=not args.quiet, shard_size=args.shard_size,
                         surround_model=args.surround_model,
                         command="python -m data_prep.synthesize " + shlex.join(argv))
        if not args.quiet:
            print(f"wrote {out}")

    code = run_cli(write, path=args.out)
    if code:
        raise SystemExit(code)
    return 0


if __name__ == "__main__":
    main()
