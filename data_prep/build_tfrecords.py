"""Turn stimuli + responses into a tfsacnn dataset directory (TFRecord shards + manifest).

    python -m data_prep.build_tfrecords --out DATA/m1s1 --sacnn-dir RAW --site m1s1
    python -m data_prep.build_tfrecords --out DATA/x --images imgs/ --responses rsp.csv --id-column image

Splits: an explicit validation set (--val-images/--val-responses, or val_* in --sacnn-dir)
is used as is; otherwise --val-fraction (default 0.1) of the train images becomes "val".
--test-fraction moves a fraction into "test": from the validation set when one is given
(so test keeps its repeats), else from train (--test-from overrides). Draws use --seed.
Responses with repeats, (N,R,n) or (R,N,n), keep them; the target is their mean over
trials (NaN = missing trial). Bad input: one line `error: <file>: <problem>`, exit 2.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shlex
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from data_prep import loaders, preprocess  # noqa: E402
from data_prep.writer import check_dataset_out, write_dataset  # noqa: E402
from tfsacnn.errors import (ConfigError, DataError, OneLineParser, add_output_flags,  # noqa: E402
                            int_at_least, run_cli)


SACNN_FILES = {"train_images": "train_img_{site}.npy", "train_responses": "trainRsp_{site}.npy",
               "val_images": "val_img_{site}.npy", "val_responses": "valRsp_{site}.npy"}


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _crop(text: str) -> float:
    v = _number(text)
    if v <= 0 or (v >= 1 and v != int(v)):
        raise argparse.ArgumentTypeError("a pixel count >= 1 or a fraction in (0, 1)")
    return int(v) if v >= 1 else v


def _fraction(text: str) -> float:
    v = _number(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError("a fraction in [0, 1)")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m data_prep.build_tfrecords", description=__doc__)
    p.add_argument("--out", required=True, type=Path, help="dataset directory to create")
    src = p.add_argument_group("inputs (either --images/--responses or --sacnn-dir/--site)")
    src.add_argument("--images", type=Path,
                     help="image directory (recursive), .txt list of images, or .npy (N,H,W[,1|3])")
    src.add_argument("--responses", type=Path, help=".npy (N,n)|(N,R,n), .csv, .parquet or .mat")
    src.add_argument("--val-images", type=Path, help="validation images (same formats as --images)")
    src.add_argument("--val-responses", type=Path, help="validation responses; repeats (N,R,n) are kept")
    src.add_argument("--sacnn-dir", type=Path, help="directory with train_img_SITE.npy, trainRsp_SITE.npy, "
                                                    "val_img_SITE.npy, valRsp_SITE.npy")
    src.add_argument("--site", help="site name in the --sacnn-dir file names, e.g. m1s1")
    src.add_argument("--id-column", help="column of the response table that names each row's image "
                                         "(relative path, with or without extension, or file name)")
    src.add_argument("--mat-variable", help="variable holding the responses in a .mat file")
    src.add_argument("--val-mat-variable", help="variable holding the validation responses in a .mat file")
    sp = p.add_argument_group("splits")
    sp.add_argument("--val-fraction", type=_fraction, default=None,
                    help="fraction of train moved to val when no validation set is given (default: 0.1)")
    sp.add_argument("--test-fraction", type=_fraction, default=0.0, help="fraction moved to a test split (0: no test split)")
    sp.add_argument("--test-from", choices=["train", "val"], default=None,
                    help="where the test split comes from (default: val if a validation set is given)")
    sp.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the val/test draws")
    pp = p.add_argument_group("preprocessing")
    pp.add_argument("--size", type=int, default=None,
                    help="output side in pixels (default: 50; images of mixed sizes need it given explicitly)")
    pp.add_argument("--crop", type=_crop, default=None, help="centre crop: pixels (>= 1) or a fraction (< 1) of the short side (default: none)")
    pp.add_argument("--normalize", choices=["standardize", "unit"], default="standardize",
                    help="standardize: (x-mean)/std from train pixels; unit: [0,1]")
    pp.add_argument("--nan-policy", choices=["error", "drop-images", "zero"], default="error",
                    help="NaN/inf in the target responses: refuse, drop those images, or set them to 0")
    out = p.add_argument_group("output")
    out.add_argument("--shard-size", type=int, default=10000, help="examples per shard")
    out.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_output_flags(out)
    return p


# --------------------------------------------------------------------------- steps
def _inputs(args) -> dict:
    """{'train': (images, responses, mat_variable), 'val': ...} paths from the arguments."""
    if args.sacnn_dir is not None:
        if args.images or args.responses or args.val_images or args.val_responses:
            raise ConfigError("--sacnn-dir: do not combine with --images/--responses")
        if not args.site:
            raise ConfigError("--sacnn-dir: needs --site (e.g. --site m1s1)")
        if not args.sacnn_dir.is_dir():
            raise DataError(f"{args.sacnn_dir}: not a directory")
        f = {k: args.sacnn_dir / v.format(site=args.site) for k, v in SACNN_FILES.items()}
        for key in ("train_images", "train_responses"):
            if not f[key].is_file():
                raise DataError(f"{f[key]}: not found")
        out = {"train": (f["train_images"], f["train_responses"], None)}
        if f["val_images"].is_file() != f["val_responses"].is_file():
            missing = f["val_images"] if not f["val_images"].is_file() else f["val_responses"]
            raise DataError(f"{missing}: not found (the other val file exists)")
        if f["val_images"].is_file():
            out["val"] = (f["val_images"], f["val_responses"], None)
        return out
    if args.images is None or args.responses is None:
        raise ConfigError("inputs: give --images and --responses, or --sacnn-dir and --site")
    out = {"train": (args.images, args.responses, args.mat_variable)}
    if (args.val_images is None) != (args.val_responses is None):
        raise ConfigError("--val-images/--val-responses: give both or neither")
    if args.val_images is not None:
        out["val"] = (args.val_images, args.val_responses, args.val_mat_variable)
    return out


def _match(images: loaders.Images, rsp: loaders.Responses) -> tuple[np.ndarray, list, np.ndarray]:
    """Pair images with response rows -> (images (N,S,S), ids, responses (N,...))."""
    n = len(images.ids)
    if rsp.ids is None:
        values = rsp.values
        if values.ndim == 3 and values.shape[0] != n and values.shape[1] == n:
            values = np.swapaxes(values, 0, 1)  # repeats stored (R,N,n) -> (N,R,n)
        if len(values) != n:
            hint = " (is the array transposed?)" if values.shape[-1] == n else ""
            raise DataError(f"{rsp.source}: {len(values)} response rows but {n} images in {images.source}{hint}")
        return images.array, images.ids, values
    keys: dict[str, list[int]] = {}
    for i, rel in enumerate(images.ids):
        name = rel.rsplit("/", 1)[-1]
        for k in {rel, rel.rsplit(".", 1)[0], name, name.rsplit(".", 1)[0]}:
            keys.setdefault(k, []).append(i)
    order = []
    for row, key in enumerate(rsp.ids):
        hits = keys.get(key, [])
        if len(hits) != 1:
            problem = "matches no image" if not hits else f"matches {len(hits)} images"
            raise DataError(f"{rsp.source}: id {key!r} (row {row + 1}) {problem} in {images.source}")
        order.append(hits[0])
    if len(set(order)) != len(order):
        raise DataError(f"{rsp.source}: several ids name the same image in {images.source}")
    unused = n - len(order)
    if unused:
        print(f"note: {images.source}: {unused} images have no response row and are left out", file=sys.stderr)
    return images.array[order], [images.ids[i] for i in order], rsp.values


def _targets(values: np.ndarray, source: str, policy: str):
    """(N,n) or (N,R,n) -> (targets (N,n), repeats or None, keep mask (N,), n_fixed)."""
    repeats = None
    if values.ndim == 3:
        repeats = values.copy()
        if np.isinf(repeats).any():
            if policy == "error":
                raise DataError(f"{source}: responses contain inf (use NaN for a missing trial, or --nan-policy)")
            repeats[np.isinf(repeats)] = np.nan
        with warnings.catch_warnings():  # all trials missing -> NaN target, handled below
            warnings.simplefilter("ignore", RuntimeWarning)
            targets = np.nanmean(repeats, axis=1)
    else:
        targets = values.copy()
    bad = ~np.isfinite(targets)
    keep = np.ones(len(targets), bool)
    if bad.any():
        rows = np.flatnonzero(bad.any(1))
        if policy == "error":
            shown = ", ".join(str(r + 1) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise DataError(f"{source}: {int(bad.sum())} NaN/inf responses (rows {shown}); "
                            "use --nan-policy drop-images|zero to accept them")
        if policy == "zero":
            targets[bad] = 0.0
        else:
            keep[rows] = False
    return targets.astype(np.float32), repeats, keep, int(bad.sum())


def _draw(n: int, k_of: int, fraction: float, rng, what: str, source: str) -> np.ndarray:
    """Sorted indices of round(fraction * k_of) of n items (at least 1 when fraction > 0)."""
    k = max(1, int(round(fraction * k_of))) if fraction > 0 else 0
    if k >= n:
        raise DataError(f"{source}: {what} of {fraction} leaves no images out of {n}")
    return np.sort(rng.permutation(n)[:k])


def _take(split: dict, idx) -> dict:
    return {k: (v[idx] if isinstance(v, np.ndarray) else [v[i] for i in idx]) for k, v in split.items()
            if v is not None}


def _split(data: dict, args) -> tuple[dict, dict]:
    """Draw val/test from train or val; return (splits, description)."""
    rng = np.random.default_rng(args.seed)
    explicit_val = "val" in data
    if explicit_val and args.val_fraction:
        raise ConfigError("--val-fraction: a validation set is given; it is used as is")
    val_fraction = 0.0 if explicit_val else (0.1 if args.val_fraction is None else args.val_fraction)
    test_from = args.test_from or ("val" if explicit_val else "train")
    if test_from == "val" and not explicit_val:
        raise ConfigError("--test-from val: no validation set is given")
    out = dict(data)
    n_train = len(data["train"]["images"])  # fractions of train are fractions of all train images
    if args.test_fraction > 0:
        base = out[test_from]
        n = len(base["images"])
        idx = _draw(n, n, args.test_fraction, rng, "--test-fraction", test_from)
        rest = np.setdiff1d(np.arange(n), idx)
        out["test"], out[test_from] = _take(base, idx), _take(base, rest)
    if val_fraction > 0:
        base = out["train"]
        n = len(base["images"])
        idx = _draw(n, n_train, val_fraction, rng, "--val-fraction", "train")
        out["val"], out["train"] = _take(base, idx), _take(base, np.setdiff1d(np.arange(n), idx))
    desc = {"seed": args.seed, "val": "given" if explicit_val else f"{val_fraction} of train",
            "test": f"{args.test_fraction} of {test_from}" if args.test_fraction > 0 else None}
    return {k: out[k] for k in ("train", "val", "test") if k in out}, desc


def _file_source(path: Path) -> dict:
    info = {"path": str(Path(path).resolve())}
    if Path(path).is_file():
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        info["sha256"] = h.hexdigest()
    return info


def _load_split(name: str, img_path: Path, rsp_path: Path, mat_var, args, prepare) -> dict:
    """Read, pair and clean one input split -> {images (N,S,S) on [0,1] scale, responses, repeats, ids, ...}."""
    # --id-column applies to response tables (a .npy val set next to a train table ignores it)
    id_col = args.id_column if name == "train" or Path(rsp_path).suffix.lower() in loaders.TABLES else None
    rsp = loaders.load_responses(rsp_path, id_column=id_col, mat_variable=mat_var)
    imgs = loaders.load_images(img_path, prepare)
    images, ids, values = _match(imgs, rsp)
    targets, repeats, keep, n_bad = _targets(values, str(rsp_path), args.nan_policy)
    if not keep.any():
        raise DataError(f"{rsp_path}: every image has NaN responses; nothing left after --nan-policy drop-images")
    if not keep.all():
        images, targets, ids = images[keep], targets[keep], [i for i, k in zip(ids, keep) if k]
        repeats = None if repeats is None else repeats[keep]
    images /= np.float32(imgs.pixel_max)
    return {"images": images, "responses": targets, "repeats": repeats, "ids": ids, "neuron_ids": rsp.neuron_ids,
            "pixel_max": imgs.pixel_max,
            "nan": {"policy": args.nan_policy, "n_nonfinite": n_bad, "n_images_dropped": int((~keep).sum())},
            "sources": {"images": _file_source(img_path) | {"n_images": len(imgs.ids)},
                        "responses": _file_source(rsp_path) | {"shape": list(rsp.values.shape)}}}


def _write_index(splits: dict):
    """extra_files writer of image_index.csv: split, index in split, source image id."""
    def write(path):
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["split", "index", "image"])
            for name, s in splits.items():
                w.writerows((name, i, img_id) for i, img_id in enumerate(s["ids"]))
    return write


def build(args, argv=None) -> Path:
    """Run the whole conversion for parsed `args`; return the dataset directory."""
    check_dataset_out(args.out, args.overwrite)
    if args.shard_size < 1:
        raise ConfigError(f"--shard-size: must be >= 1, got {args.shard_size}")
    if args.size is not None and args.size < 1:
        raise ConfigError(f"--size: must be >= 1, got {args.size}")
    inputs = _inputs(args)
    prepare = preprocess.Preprocessor(args.size, args.crop)
    data = {name: _load_split(name, *paths, args, prepare) for name, paths in inputs.items()}
    train = data["train"]
    for name, d in data.items():
        if d["responses"].shape[1] != train["responses"].shape[1]:
            raise DataError(f"{inputs[name][1]}: {d['responses'].shape[1]} neurons, but train has "
                            f"{train['responses'].shape[1]}")
        if train["neuron_ids"] and d["neuron_ids"] and d["neuron_ids"] != train["neuron_ids"]:
            raise DataError(f"{inputs[name][1]}: neuron columns differ from the train responses' columns")
    neuron_ids = next((d["neuron_ids"] for d in data.values() if d["neuron_ids"]), None)
    sources = {f"{name}_{k}": v for name, d in data.items() for k, v in d["sources"].items()}
    sources.update(site=args.site, nan={name: d["nan"] for name, d in data.items()})
    splits, sources["split"] = _split({k: {kk: d[kk] for kk in ("images", "responses", "repeats", "ids")}
                                       for k, d in data.items()}, args)
    normalization = preprocess.normalize({k: s["images"] for k, s in splits.items()}, args.normalize,
                                         source=str(inputs["train"][0]))
    preprocessing = preprocess.describe(splits["train"]["images"].shape[1], args.crop,
                                        {name: d["pixel_max"] for name, d in data.items()})
    arrays = {k: {kk: v for kk, v in s.items() if kk != "ids" and v is not None} for k, s in splits.items()}
    return write_dataset(
        args.out, arrays, neuron_ids=neuron_ids, preprocessing=preprocessing, normalization=normalization,
        sources=sources,
        command="python -m data_prep.build_tfrecords " + shlex.join(argv if argv is not None else sys.argv[1:]),
        shard_size=args.shard_size, overwrite=args.overwrite, extra_files={"image_index.csv": _write_index(splits)},
        progress=sys.stderr.isatty())


def main(argv=None) -> int:
    """CLI entry point; bad input -> `error: <file>: <problem>` on stderr and SystemExit(2)."""
    from tfsacnn.progress import silence
    from tfsacnn.quiet import quiet_tensorflow

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    def run():
        quiet_tensorflow(args.verbose)
        silence(args.quiet)
        out = build(args, argv)
        if not args.quiet:
            print(f"wrote {out}")

    code = run_cli(run, path=args.out)
    if code:
        raise SystemExit(code)
    return 0


if __name__ == "__main__":
    main()
