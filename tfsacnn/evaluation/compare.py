"""Compare trained runs in a table like the paper's Table 1.

    python -m tfsacnn.compare RUN_DIR... [--baseline RUN_DIR] [--split val|test]
        [--out table.md] [--neurons-mask MASK.npy] [--group-by-surround] [--peaks]

One row per run (per neuron group with --group-by-surround): model, trainable
parameters per neuron, mean CORR, PT_S %, PT_J % (each +- s.e.m. over neurons, NaN
excluded), number of neurons; and, paired over neurons against the baseline (default:
the first run), the mean difference with its bootstrap 95% interval, the number of
neurons improved and a Wilcoxon signed-rank p-value (zero differences kept:
zero_method="zsplit"). The p-values are not corrected for multiple comparisons; a
study that tests a family of hypotheses corrects them with `holm`. `--peaks` adds TOP % and peak height (`tfsacnn.metrics`): whether
a PT difference comes from *which* images a model puts at the top or from *how high* it
predicts them. Reads only RUN/metrics.json (docs/internals.md); no TensorFlow.
"""
from __future__ import annotations

import math
import pathlib
import sys
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from tfsacnn.errors import OneLineParser, TfsacnnError, run_cli
from tfsacnn.files import check_writable, read_json, read_yaml, write_text

METRICS = ("corr", "pt_s", "pt_j")            # table order, as in the paper
PEAKS = ("top_overlap", "peak_height")      # with --peaks: why PT differs
LABEL = {"corr": "CORR", "pt_s": "PT_S %", "pt_j": "PT_J %", "top_overlap": "TOP %",
          "peak_height": "peak height"}
SCALE = {"corr": 1.0, "pt_s": 100.0, "pt_j": 100.0, "top_overlap": 100.0,
          "peak_height": 1.0}               # PT and TOP shown in %
COLUMN = {"corr": "corr", "pt_s": "pt_s_pct", "pt_j": "pt_j_pct", "top_overlap": "top_overlap_pct",
        "peak_height": "peak_height"}
DIGITS = {"corr": 3, "pt_s": 1, "pt_j": 1, "top_overlap": 1, "peak_height": 2}


class CompareError(TfsacnnError):
    """A run cannot be compared; the message is `<run dir>: <problem>`."""


# --------------------------------------------------------------------------- loading
def _floats(values, run, what):
    try:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise CompareError(f"{run}: metrics.json {what} is not a list of numbers") from None


def load_run(run_dir, split="val", metrics=METRICS):
    """Read RUN/metrics.json for one split (the per-neuron `metrics`).

    -> {"dir", "model", "core", "params", "neurons" (n,) int, "sha", "data_dir",
        "per_neuron": {metric: (n,) float, NaN for null}}. Raises CompareError.
    """
    run = str(run_dir)
    path = pathlib.Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise CompareError(f"{run}: no metrics.json")
    m = read_json(path, CompareError)
    for key in ("model", "neurons", "data", "splits"):
        if key not in m:
            raise CompareError(f"{run}: metrics.json has no '{key}'")
    neurons = m["neurons"]
    if (not isinstance(neurons, list) or not neurons
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in neurons)):
        raise CompareError(f"{run}: metrics.json 'neurons' must be a non-empty list of neuron indices")
    if len(set(neurons)) != len(neurons):
        raise CompareError(f"{run}: metrics.json 'neurons' has duplicates")
    data = m["data"] if isinstance(m["data"], dict) else {}
    sha = data.get("manifest_sha256")
    if not sha:
        raise CompareError(f"{run}: metrics.json has no data.manifest_sha256")
    cfg_path = pathlib.Path(run_dir) / "config.yaml"
    trained = ((read_yaml(cfg_path, CompareError).get("data") or {}).get("manifest_sha256")
               if cfg_path.is_file() else None)
    if trained and trained != sha:
        raise CompareError(f"{path}: scores another dataset (manifest sha256 {sha[:12]}) than "
                           f"the run was trained on ({trained[:12]}, config.yaml); score it "
                           f"with python -m tfsacnn.evaluate --run {run} --save")
    splits = m["splits"] if isinstance(m["splits"], dict) else {}
    if split not in splits or not isinstance(splits[split], dict):
        have = ", ".join(sorted(splits)) or "none"
        raise CompareError(f"{run}: no '{split}' split in metrics.json (has: {have})")
    per = splits[split].get("per_neuron")
    if not isinstance(per, dict):
        raise CompareError(f"{run}: metrics.json splits.{split} has no per_neuron")
    values = {}
    for name in metrics:
        if not isinstance(per.get(name), list):
            hint = (f" (scored by an older tfsacnn: python -m tfsacnn.evaluate --run {run} "
                    f"--split {split} --save adds it)" if name in PEAKS else "")
            raise CompareError(
                f"{run}: metrics.json splits.{split}.per_neuron has no '{name}' list{hint}")
        values[name] = _floats(per[name], run, f"splits.{split}.per_neuron.{name}")
        if len(values[name]) != len(neurons):
            raise CompareError(
                f"{run}: splits.{split}.per_neuron.{name} has {len(values[name])} values "
                f"for {len(neurons)} neurons")
    params = m.get("trainable_params_per_neuron")
    return {
        "dir": run, "model": str(m["model"]), "core": m.get("core"),
        "params": params if isinstance(params, (int, float)) and not isinstance(params, bool) else None,
        "neurons": np.array(neurons, dtype=np.int64), "sha": sha, "data_dir": data.get("dir"),
        "per_neuron": values,
    }


def has_peaks(run_dirs, split="val"):
    """True when every run's metrics.json has TOP and peak height for `split`."""
    try:
        for d in run_dirs:
            load_run(d, split, METRICS + PEAKS)
    except CompareError:
        return False
    return True


def align_runs(runs):
    """Check that every run has the baseline's dataset and neuron set; reorder to it."""
    base = runs[0]
    for r in runs[1:]:
        if r["sha"] != base["sha"]:
            raise CompareError(
                f"{r['dir']}: different dataset than baseline {base['dir']} "
                f"(manifest_sha256 {r['sha'][:12]} vs {base['sha'][:12]})")
        if set(r["neurons"].tolist()) != set(base["neurons"].tolist()):
            extra = sorted(set(r["neurons"].tolist()) - set(base["neurons"].tolist()))
            missing = sorted(set(base["neurons"].tolist()) - set(r["neurons"].tolist()))
            raise CompareError(
                f"{r['dir']}: different neuron set than baseline {base['dir']} "
                f"({len(r['neurons'])} vs {len(base['neurons'])} neurons; "
                f"extra {extra[:5]}, missing {missing[:5]})")
        if not np.array_equal(r["neurons"], base["neurons"]):
            pos = {n: i for i, n in enumerate(r["neurons"].tolist())}
            idx = np.array([pos[n] for n in base["neurons"].tolist()])
            r["per_neuron"] = {k: v[idx] for k, v in r["per_neuron"].items()}
            r["neurons"] = base["neurons"].copy()


def _load_mask(mask, neurons, owner, what):
    """Boolean mask over dataset neuron indices -> (n,) bool over the runs' neurons."""
    mask = np.asarray(mask)
    if mask.dtype != bool:
        if mask.dtype.kind in "iu" and np.isin(mask, (0, 1)).all():
            mask = mask.astype(bool)
        else:
            raise CompareError(f"{owner}: {what} must be a boolean array, got dtype {mask.dtype}")
    if mask.ndim != 1:
        raise CompareError(f"{owner}: {what} must be 1-D over dataset neurons, got shape {mask.shape}")
    if neurons.max() >= len(mask):
        raise CompareError(
            f"{owner}: {what} has {len(mask)} entries but the runs use neuron index {neurons.max()}")
    return mask[neurons]


def surround_mask(runs, ground_truth=None):
    """has_surround of the runs' neurons from <data.dir>/ground_truth.npz -> (n,) bool."""
    base = runs[0]
    if ground_truth is not None:
        candidates = [pathlib.Path(ground_truth)]
    else:
        candidates = []
        for r in runs:
            if r["data_dir"]:
                d = pathlib.Path(r["data_dir"])
                candidates += [d / "ground_truth.npz"]
                if not d.is_absolute():
                    candidates += [pathlib.Path(r["dir"]) / d / "ground_truth.npz"]
        if not candidates:
            raise CompareError(
                f"{base['dir']}: --group-by-surround needs data.dir in metrics.json "
                "(or pass --ground-truth FILE.npz)")
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise CompareError(
            f"{base['dir']}: --group-by-surround: {candidates[0]} not found "
            "(a synthetic dataset's ground truth; pass --ground-truth FILE.npz if it moved)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "has_surround" not in z.files:
                raise CompareError(f"{path}: no 'has_surround' array (has: {', '.join(z.files)})")
            arr = z["has_surround"]
    except CompareError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable npz is one clear error
        raise CompareError(f"{path}: cannot read ({e})") from None
    return _load_mask(arr, base["neurons"], str(path), "has_surround")


# --------------------------------------------------------------------------- statistics
def mean_sem(x):
    """Mean and s.e.m. (ddof=1) over the non-NaN entries; (NaN, NaN) when empty."""
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return math.nan, math.nan
    sem = float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else math.nan
    return float(x.mean()), sem


WILCOXON_ZERO_METHOD = "zsplit"   # zero differences count, half their rank to each sign
BOOTSTRAP_RESAMPLES = 10000
BOOTSTRAP_SEED = 0


def wilcoxon_p(d):
    """Two-sided Wilcoxon signed-rank p of differences d (n,), zero differences kept
    (`WILCOXON_ZERO_METHOD`); 1.0 when every difference is 0, NaN when d is empty."""
    d = np.asarray(d, np.float64)
    if len(d) == 0:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(d, zero_method=WILCOXON_ZERO_METHOD).pvalue)


def bootstrap_ci(d, level=0.95, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """Percentile bootstrap interval (lo, hi) of the mean of d (n,) (resampling neurons,
    a fixed seed); (NaN, NaN) for fewer than 2 values."""
    d = np.asarray(d, np.float64)
    if len(d) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for s in range(0, resamples, 1000):            # bounded memory for large n
        k = min(1000, resamples - s)
        means[s:s + k] = d[rng.integers(0, len(d), (k, len(d)))].mean(1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


def holm(pvalues):
    """Holm-Bonferroni adjusted p-values of a family (array-like, NaN = not tested and
    not counted) -> (m,) float64, each min(1, running max of (m - i) * p_(i))."""
    p = np.asarray(pvalues, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, (m - i) * p[j])
        out[j] = min(1.0, running)
    return out


def paired(a, b):
    """Paired stats of a against b over neurons where both are non-NaN.

    a, b: (n,) -> {"diff": mean(a - b), "ci_low", "ci_high" (`bootstrap_ci` of the
    mean difference), "n_improved": #(a > b), "n_paired", "p" (`wilcoxon_p`: two-sided,
    zero differences kept)}. The differences are rounded to 1e-9 first, so equal gains
    stay tied ranks (0.7 - 0.6 != 0.4 - 0.3 in floating point, and PT values are
    multiples of 1/top_k).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = ~(np.isnan(a) | np.isnan(b))
    d = np.round(a[ok] - b[ok], 9)
    lo, hi = bootstrap_ci(d)
    return {"diff": float(d.mean()) if len(d) else math.nan, "ci_low": lo, "ci_high": hi,
            "n_improved": int((d > 0).sum()), "n_paired": int(len(d)), "p": wilcoxon_p(d)}


def _row(run, sel, base, group, metrics):
    row = {"run": run["dir"], "group": group, "model": run["model"], "core": run["core"],
           "params_per_neuron": run["params"], "n_neurons": int(sel.sum())}
    nan_any = np.zeros(int(sel.sum()), dtype=bool)
    for name in metrics:
        x = run["per_neuron"][name][sel] * SCALE[name]
        nan_any |= np.isnan(x)
        row[COLUMN[name]], row[COLUMN[name] + "_sem"] = mean_sem(x)
    row["n_nan"] = int(nan_any.sum())
    row["baseline"] = base["dir"]
    row["is_baseline"] = run is base
    for name in metrics:
        col = COLUMN[name]
        if run is base:
            row.update({f"{col}_diff": math.nan, f"{col}_diff_ci_low": math.nan,
                        f"{col}_diff_ci_high": math.nan, f"{name}_n_improved": None,
                        f"{name}_n_paired": None, f"{name}_p": math.nan})
            continue
        s = paired(run["per_neuron"][name][sel] * SCALE[name], base["per_neuron"][name][sel] * SCALE[name])
        row.update({f"{col}_diff": s["diff"], f"{col}_diff_ci_low": s["ci_low"],
                    f"{col}_diff_ci_high": s["ci_high"], f"{name}_n_improved": s["n_improved"],
                    f"{name}_n_paired": s["n_paired"], f"{name}_p": s["p"]})
    return row


def compare_runs(run_dirs, baseline=None, split="val", neuron_mask=None,
                 group_by_surround=False, ground_truth=None, peaks=False):
    """Table-1 style comparison -> pandas.DataFrame, one row per (group, run).

    run_dirs: run directories; baseline: a run directory (default: the first run; it is
    added as the first row if not in run_dirs). neuron_mask: optional boolean array (or
    .npy path) over dataset neuron indices restricting the neurons compared.
    group_by_surround: split rows into "surround"/"control" by has_surround in
    <data.dir>/ground_truth.npz (or the `ground_truth` npz path given).
    Columns: run, group, model, core, params_per_neuron, n_neurons, n_nan,
    corr, corr_sem, pt_s_pct, pt_s_pct_sem, pt_j_pct, pt_j_pct_sem, baseline, is_baseline and, per
    metric m (column c = corr|pt_s_pct|pt_j_pct): c_diff, c_diff_ci_low, c_diff_ci_high
    (bootstrap 95%), m_n_improved, m_n_paired, m_p (Wilcoxon, zero differences kept;
    uncorrected).
    peaks: also m = top_overlap (column top_overlap_pct) and peak_height.
    PT and TOP columns are in %. Raises CompareError (`<run dir>: <problem>`).
    """
    dirs = [str(d) for d in run_dirs]
    if not dirs and baseline is None:
        raise CompareError("compare: no run directories given")
    if baseline is not None:
        key = pathlib.Path(baseline).resolve()
        matches = [d for d in dirs if pathlib.Path(d).resolve() == key]
        if matches:
            dirs.remove(matches[0])
            dirs.insert(0, matches[0])
        else:
            dirs.insert(0, str(baseline))
    metrics = METRICS + PEAKS if peaks else METRICS
    runs = [load_run(d, split, metrics) for d in dirs]
    align_runs(runs)
    base = runs[0]
    n = len(base["neurons"])
    sel_all = np.ones(n, dtype=bool)
    if neuron_mask is not None:
        owner = str(neuron_mask) if isinstance(neuron_mask, (str, pathlib.Path)) else "neuron mask"
        if isinstance(neuron_mask, (str, pathlib.Path)):
            try:
                neuron_mask = np.load(neuron_mask, allow_pickle=False)
            except Exception as e:  # noqa: BLE001
                raise CompareError(f"{owner}: cannot read ({e})") from None
        sel_all = _load_mask(neuron_mask, base["neurons"], owner, "neuron mask")
        if not sel_all.any():
            raise CompareError(f"{owner}: the mask selects none of the runs' neurons")
    groups = [("all", sel_all)]
    if group_by_surround:
        sur = surround_mask(runs, ground_truth)
        groups = [("surround", sel_all & sur), ("control", sel_all & ~sur)]
    rows = [_row(r, sel, base, g, metrics) for g, sel in groups if sel.any() for r in runs]
    df = pd.DataFrame(rows)
    for m in metrics:   # counts stay integers (empty on the baseline rows)
        df[f"{m}_n_improved"] = df[f"{m}_n_improved"].astype("Int64")
        df[f"{m}_n_paired"] = df[f"{m}_n_paired"].astype("Int64")
    return df


# --------------------------------------------------------------------------- formatting
def _num(x, fmt):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def format_p(p):
    if p is None or math.isnan(p):
        return "–"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def format_table(df):
    """Rows of display strings: (header, rows) for Markdown/stdout."""
    grouped = df["group"].nunique() > 1 or (len(df) and df["group"].iloc[0] != "all")
    metrics = [m for m in METRICS + PEAKS if COLUMN[m] in df.columns]
    header = (["group"] if grouped else []) + ["run", "model", "params/neuron", "neurons"]
    header += [LABEL[m] for m in metrics] + [f"Δ{LABEL[m]} [95% CI] (improved, p)" for m in metrics]
    rows = []
    for _, r in df.iterrows():
        model = r["model"] + (f" ({r['core']})" if r["core"] not in (None, "independent") else "")
        cells = ([r["group"]] if grouped else []) + [
            r["run"], model, _num(r["params_per_neuron"], ",.0f"),
            f"{r['n_neurons']}" + (f" ({r['n_nan']} NaN)" if r["n_nan"] else "")]
        for m in metrics:
            c, d = COLUMN[m], f".{DIGITS[m]}f"
            cells.append(f"{_num(r[c], d)} ± {_num(r[c + '_sem'], d)}")
        for m in metrics:
            c = COLUMN[m]
            if r["is_baseline"]:
                cells.append("baseline")
                continue
            d = f"+.{DIGITS[m]}f"
            cells.append(f"{_num(r[c + '_diff'], d)} [{_num(r[c + '_diff_ci_low'], d)}, "
                         f"{_num(r[c + '_diff_ci_high'], d)}] ({int(r[f'{m}_n_improved'])}/"
                         f"{int(r[f'{m}_n_paired'])}, p={format_p(r[f'{m}_p'])})")
        rows.append(cells)
    return header, rows


def to_markdown(df):
    """The comparison table as a GitHub Markdown table (str)."""
    header, rows = format_table(df)
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI
def _parser():
    from tfsacnn.errors import add_output_flags, split_name

    p = OneLineParser(
        prog="python -m tfsacnn.compare",
        description="Compare runs in a table like the paper's Table 1 (CORR, PT_S %, PT_J %, "
                    "mean ± s.e.m. over neurons; paired difference with its bootstrap 95% "
                    "interval, neurons improved and the Wilcoxon signed-rank p against the "
                    "baseline, zero differences kept (zero_method='zsplit')).")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (with metrics.json)")
    p.add_argument("--baseline", metavar="RUN_DIR", help="paired baseline (default: the first run)")
    p.add_argument("--split", default=None, type=split_name,
                   help="split to compare (default: test when every run has it, else val)")
    p.add_argument("--out", metavar="TABLE.md",
                   help="write the table as Markdown here and as CSV next to it (same stem, .csv)")
    p.add_argument("--neurons-mask", metavar="MASK.npy",
                   help="boolean .npy over dataset neuron indices: compare only these neurons")
    p.add_argument("--group-by-surround", action="store_true",
                   help="separate rows for surround and control neurons, by has_surround in "
                        "<data.dir>/ground_truth.npz (synthetic sites)")
    p.add_argument("--peaks", action="store_true",
                   help="add TOP %% (share of the true top_k images among the predicted top_k) "
                        "and peak height (predicted / true rise of the top_k above the mean): "
                        "which images, and how high, behind a PT difference")
    p.add_argument("--ground-truth", metavar="FILE.npz",
                   help="ground_truth.npz to use with --group-by-surround instead of <data.dir>/")
    add_output_flags(p)
    return p


def main(argv=None):
    """`python -m tfsacnn.compare`; returns the exit code."""
    from .evaluate import default_split   # (evaluate imports keras; compare itself does not)

    parser = _parser()
    args = parser.parse_args(argv)
    if args.ground_truth and not args.group_by_surround:
        parser.error("--ground-truth: only read with --group-by-surround (it would be ignored)")

    def split_of(dirs):
        try:
            splits = [read_json(pathlib.Path(d) / "metrics.json").get("splits") or {} for d in dirs]
        except TfsacnnError:
            return "val"      # compare_runs names the unreadable file
        return "test" if all(default_split(s) == "test" for s in splits) else "val"

    def run():
        if args.out:   # before the work; the .md and its .csv are written together
            for path in (args.out, pathlib.Path(args.out).with_suffix(".csv")):
                check_writable(path)
        split = args.split or split_of(args.runs + ([args.baseline] if args.baseline else []))
        df = compare_runs(args.runs, baseline=args.baseline, split=split,
                          neuron_mask=args.neurons_mask, group_by_surround=args.group_by_surround,
                          ground_truth=args.ground_truth, peaks=args.peaks)
        md = to_markdown(df)
        header = f"split: {split}; baseline: {df['baseline'].iloc[0]}"
        if not args.quiet:
            print(header)
            print(md, end="")
        if args.out:
            out = pathlib.Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            write_text(out, f"{header}\n\n" + md)
            csv = out.with_suffix(".csv")
            write_text(csv, df.to_csv(index=False))
            if not args.quiet:
                print(f"wrote {out} and {csv}")

    return run_cli(run, path=args.out)


if __name__ == "__main__":
    sys.exit(main())


# --------------------------------------------------------------------------- directional tests
DIRECTIONS = ("greater", "less")


def hodges_lehmann(d):
    """Hodges-Lehmann estimate of the centre of d (n,): the median of the Walsh averages
    (d_i + d_j) / 2, i <= j; NaN when d is empty."""
    d = np.asarray(d, np.float64)
    if len(d) == 0:
        return math.nan
    i, j = np.triu_indices(len(d))
    return float(np.median((d[i] + d[j]) / 2))


def hodges_lehmann_shift(x, y):
    """Two-sample Hodges-Lehmann shift of x (n,) over y (m,): median of x_i - y_j."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) == 0 or len(y) == 0:
        return math.nan
    return float(np.median(x[:, None] - y[None, :]))


def _bootstrap(stat, samples, level=0.95, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """Percentile interval of stat(*resampled samples), each sample resampled with
    replacement on its own (fixed seed); (NaN, NaN) when a sample has < 2 values."""
    samples = [np.asarray(s, np.float64) for s in samples]
    if any(len(s) < 2 for s in samples):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    vals = np.array([stat(*[s[rng.integers(0, len(s), len(s))] for s in samples])
                     for _ in range(resamples)])
    a = (1 - level) / 2
    lo, hi = np.quantile(vals, [a, 1 - a])
    return float(lo), float(hi)


def _check_direction(direction):
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


def directional_paired(a, b, direction="greater", resamples=BOOTSTRAP_RESAMPLES):
    """One-sided paired test of a against b in the registered direction.

    a, b: (n,) per-neuron values (NaN in either = missing, counted in n_missing, never
    dropped silently). -> {"estimate": Hodges-Lehmann estimate of a - b, "ci_low",
    "ci_high" (its bootstrap 95 % interval), "mean_diff", "n_improved" (#(a - b) in the
    registered direction), "n_paired", "n_missing", "p" (one-sided Wilcoxon signed-rank,
    zero differences kept, alternative = direction)}. Differences rounded to 1e-9 as `paired`.
    """
    _check_direction(direction)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = ~(np.isnan(a) | np.isnan(b))
    d = np.round(a[ok] - b[ok], 9)
    if len(d) == 0:
        p = math.nan
    elif not np.any(d != 0):
        p = 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(stats.wilcoxon(d, zero_method=WILCOXON_ZERO_METHOD,
                                     alternative=direction).pvalue)
    lo, hi = _bootstrap(hodges_lehmann, [d], resamples=resamples)
    sign = 1 if direction == "greater" else -1
    return {"estimate": hodges_lehmann(d), "ci_low": lo, "ci_high": hi,
            "mean_diff": float(d.mean()) if len(d) else math.nan,
            "n_improved": int((sign * d > 0).sum()), "n_paired": int(len(d)),
            "n_missing": int((~ok).sum()), "p": p}


def directional_two_sample(x, y, direction="greater", resamples=BOOTSTRAP_RESAMPLES):
    """One-sided Wilcoxon rank-sum (Mann-Whitney) test of x (n,) against y (m,).

    Used for a difference in differences: x = the surround neurons' paired differences,
    y = the controls'. -> {"estimate": two-sample Hodges-Lehmann shift x - y, "ci_low",
    "ci_high" (bootstrap, each group resampled), "mean_diff" (mean x - mean y), "n_x",
    "n_y", "n_missing" (NaNs in x or y), "p"}.
    """
    _check_direction(direction)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    missing = int(np.isnan(x).sum() + np.isnan(y).sum())
    x, y = np.round(x[~np.isnan(x)], 9), np.round(y[~np.isnan(y)], 9)
    if len(x) == 0 or len(y) == 0:
        p = math.nan
    else:
        p = float(stats.mannwhitneyu(x, y, alternative=direction, method="auto").pvalue)
    lo, hi = _bootstrap(hodges_lehmann_shift, [x, y], resamples=resamples)
    return {"estimate": hodges_lehmann_shift(x, y), "ci_low": lo, "ci_high": hi,
            "mean_diff": float(x.mean() - y.mean()) if len(x) and len(y) else math.nan,
            "n_x": int(len(x)), "n_y": int(len(y)), "n_missing": missing, "p": p}


def directional_verdict(estimate, p_adjusted, alpha, direction="greater"):
    """True only when the (multiplicity-adjusted) one-sided p < alpha AND the
    Hodges-Lehmann estimate lies in the registered direction (a NaN p never holds)."""
    _check_direction(direction)
    if p_adjusted is None or estimate is None or math.isnan(p_adjusted) or math.isnan(estimate):
        return False
    right_way = estimate > 0 if direction == "greater" else estimate < 0
    return bool(right_way and p_adjusted < alpha)
