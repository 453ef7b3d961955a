"""Run a whole experiment from one YAML file: synthesise a site, train several models, compare.

    python -m studies.sa_vs_cnn.experiment studies/sa_vs_cnn/sa_vs_cnn.yaml [--out DIR]
        [--set KEY=VALUE ...] [--overwrite] [--torch DIR]

The experiment file (see studies/sa_vs_cnn/sa_vs_cnn.yaml) has the sections

    out       output directory (default runs/<file stem>)
    site      data_prep.synthesize arguments: neurons, train, val, test, repeats, seed,
              surround_fraction
    models    model names; each is trained from configs/<name>.yaml
    baseline  the model every other one is paired against (default: the first)
    pairs     extra paired comparisons, [[model, its baseline], ...] (e.g. rf_sa_cnn vs rf_cnn)
    model     common `model` settings (core, overrides), passed to tfsacnn.fit as --set
    train     common `train` settings (epochs, batch_size, ...), passed as --set
    eval      common `eval` settings, passed as --set
    report    split: test | val | auto (auto = test when the site has one)

`--set site.neurons=3`, `--set models=[ff_cnn,ff_sa_cnn]`, `--set train.epochs=1`
override a key (value parsed as YAML). Unknown keys are refused with one line
`error: ...` and exit code 2, before any work starts.

`--torch DIR`: take each model from DIR/<model>/ (the output of `scripts/train_torch.py
train`, e.g. run on a GPU machine without TensorFlow on the same site arguments) instead
of training it: import avg_*.pth, score val and the report split, and check that the val
CORR here is the CORR the training recorded (a different site fails that check).

OUT receives:

    site/                 the synthetic dataset (with ground_truth.npz)
    runs/<model>/         one tfsacnn.fit run directory per model
    experiment.yaml       the resolved experiment
    table.md, table.csv   tfsacnn.compare --group-by-surround on the report split, plus the
                          fraction of the noise ceiling, two reference rows and the
                          surround captured by each model (below)
    references.csv        the reference predictors (ground truth, CRF-only truth) per group
    summary.json          the same numbers, the verdict and the wall times
    timings.json          wall time of each step (site, each model), kept when a step is reused

Fraction of the noise ceiling, per group of neurons, is given two ways:
`corr / NC` = mean CORR / mean noise ceiling (ratio of means), and `mean(corr_i / NC_i)`
(per-neuron normalised, then averaged). The noise ceiling NC_i is the Pearson r of the
repeat-mean target with the noise-free response (ground_truth.npz `noise_ceiling` on val,
`noise_ceiling_test` on test). Reference rows: `ground truth` predicts with the noise-free
response itself (its CORR is the ceiling); `CRF-only truth` predicts with the same model
neuron whose surround terms are held at their means (data_prep.v1_model, context=False),
i.e. the best any surround-blind model could do.

Surround captured: on surround neurons, the partial r of a model's prediction with the
noise-free response, controlling for the CRF-only truth (`metrics.partial_corr`). It says
how much of the surround's effect a model reproduces beyond its CRF, whatever its CRF
accuracy (0 for a surround-blind model), paired against the baseline like the table.

An existing OUT is reused (site and finished runs are not redone) when its
experiment.yaml equals the resolved experiment; an unfinished run is resumed; a
different experiment.yaml is refused unless --overwrite.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import pathlib
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import yaml

from tfsacnn.errors import ConfigError, OneLineParser, TfsacnnError
from tfsacnn.files import read_yaml, write_text

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
ALPHA = 0.05

SITE_DEFAULTS = {"neurons": 24, "train": 8000, "val": 1000, "test": 1000, "repeats": 10,
                 "seed": 0, "surround_fraction": 0.5}
DEFAULTS = {
    "out": None,
    "site": SITE_DEFAULTS,
    "models": ["ff_cnn", "ff_sa_cnn", "rf_cnn", "rf_sa_cnn"],
    "baseline": None,
    "pairs": [],
    "model": {},
    "train": {},
    "eval": {},
    "report": {"split": "auto"},
}
# sections whose keys are checked by tfsacnn.config (the fit config schema)
FIT_SECTIONS = ("model", "train", "eval")


# --------------------------------------------------------------------------- config
def _merge(where, base, new, path=()):
    for k, v in new.items():
        key = path + (k,)
        name = ".".join(map(str, key))
        if path == () and k not in base:
            raise ConfigError(f"{where}: unknown key {name!r} (known: {', '.join(base)})")
        if path == ("site",) and k not in SITE_DEFAULTS:
            raise ConfigError(f"{where}: unknown key {name!r} (known: {', '.join(SITE_DEFAULTS)})")
        if path == ("report",) and k != "split":
            raise ConfigError(f"{where}: unknown key {name!r} (known: split)")
        if isinstance(base.get(k), dict) and (path == () or path[0] in FIT_SECTIONS):
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: {name} must be a mapping")
            _merge(where, base[k], v, key)
        else:
            base[k] = copy.deepcopy(v)


def load(path, sets=(), out=None):
    """The resolved experiment dict from a YAML file plus `--set` overrides (ConfigError)."""
    from tfsacnn import config as config_lib
    from tfsacnn import models as models_lib

    path = pathlib.Path(path)
    raw = read_yaml(path, ConfigError)
    exp = copy.deepcopy(DEFAULTS)
    _merge(str(path), exp, raw)
    for item in sets:
        _merge(f"--set {item}", exp, config_lib.parse_set(item))
    if out is not None:
        exp["out"] = str(out)
    if exp["out"] is None:
        exp["out"] = f"runs/{path.stem}"
    where = str(path)

    site = exp["site"]
    for k, v in site.items():
        if k == "surround_fraction":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ConfigError(f"{where}: site.surround_fraction must be a number in [0, 1], got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, int) or v < (0 if k in ("test", "seed") else 1):
            raise ConfigError(f"{where}: site.{k} must be an integer"
                              f"{'' if k == 'seed' else ' >= 1' if k != 'test' else ' >= 0'}, got {v!r}")
    models = exp["models"]
    if (not isinstance(models, list) or not models
            or not all(isinstance(m, str) for m in models)):
        raise ConfigError(f"{where}: models must be a non-empty list of model names")
    if len(set(models)) != len(models):
        raise ConfigError(f"{where}: models has duplicates")
    for m in models:
        if m not in models_lib.names():
            raise ConfigError(f"{where}: models: unknown model {m!r} (known: {', '.join(models_lib.names())})")
        if not (CONFIGS / f"{m}.yaml").is_file():
            raise ConfigError(f"{where}: models: {CONFIGS / (m + '.yaml')} not found")
    if exp["baseline"] is None:
        exp["baseline"] = models[0]
    if exp["baseline"] not in models:
        raise ConfigError(f"{where}: baseline {exp['baseline']!r} is not one of models")
    pairs = exp["pairs"]
    if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(x in models for x in p) and p[0] != p[1]
            for p in pairs):
        raise ConfigError(f"{where}: pairs must be a list of [model, baseline] pairs of two "
                          f"different names from models, got {pairs!r}")
    split = exp["report"]["split"]
    if split not in ("auto", "val", "test"):
        raise ConfigError(f"{where}: report.split must be auto, val or test, got {split!r}")
    if split == "test" and site["test"] == 0:
        raise ConfigError(f"{where}: report.split is test but site.test is 0")
    if exp["eval"].get("selection_split", "val") == "test":
        raise ConfigError(f"{where}: eval.selection_split must not be the report split")
    # the fit sections go through the fit config schema now, so a bad key fails early
    for m in models:
        try:
            fit_config(exp, m)
        except ConfigError as e:
            raise ConfigError(f"{where}: {str(e).split(': ', 1)[-1]}") from None
    return exp


def fit_config(exp, name):
    """The resolved fit config of model `name` in this experiment (ConfigError)."""
    from tfsacnn import config as config_lib

    return config_lib.load(CONFIGS / f"{name}.yaml", fit_sets(exp))


def fit_sets(exp):
    """The common `--set section.key=value` overrides of every model's fit config."""
    sets = []
    for section in FIT_SECTIONS:
        for k, v in exp[section].items():
            sets.append(f"{section}.{k}={json.dumps(v)}")
    return sets


def report_split(exp):
    s = exp["report"]["split"]
    return ("test" if exp["site"]["test"] else "val") if s == "auto" else s


# --------------------------------------------------------------------------- steps
def prepare_out(exp, overwrite, log):
    out = pathlib.Path(exp["out"])
    record = out / "experiment.yaml"
    text = yaml.safe_dump(exp, sort_keys=False)
    if out.exists() and not out.is_dir():
        raise TfsacnnError(f"{out}: is a file, not an experiment directory")
    if out.exists() and any(out.iterdir()):
        if not record.is_file():
            raise TfsacnnError(f"{out}: not empty and not an experiment directory (no "
                               f"experiment.yaml); refusing to write into or delete it "
                               f"(use another --out)")
        if overwrite:
            shutil.rmtree(out)
        elif read_yaml(record) != yaml.safe_load(text):
            raise TfsacnnError(f"{out}: holds a different experiment ({record}); use "
                               f"--overwrite to replace it, or another --out")
        else:
            log(f"reusing {out} (same experiment.yaml)")
    out.mkdir(parents=True, exist_ok=True)
    write_text(record, text)
    return out


def make_site(exp, out, log):
    from data_prep.synthesize import synthesize

    site_dir = out / "site"
    if (site_dir / "manifest.json").is_file() and (site_dir / "ground_truth.npz").is_file():
        log(f"site: reusing {site_dir}")
        return site_dir, 0.0
    t = time.perf_counter()
    s = exp["site"]
    log(f"site: synthesising {s['neurons']} neurons, {s['train']} train / {s['val']} val / "
        f"{s['test']} test images into {site_dir}")
    synthesize(site_dir, neurons=s["neurons"], train=s["train"], val=s["val"], test=s["test"],
               repeats=s["repeats"], seed=s["seed"], surround_fraction=float(s["surround_fraction"]),
               overwrite=True, progress=True)
    return site_dir, time.perf_counter() - t


def reuse(exp, name, run, log):
    """True when `run` is finished; refuses one trained with other settings than `exp`'s
    (e.g. continued with `tfsacnn.fit --resume --set train.epochs=...` after its report)."""
    from tfsacnn import config as config_lib

    if not (run / "metrics.json").is_file():
        return False
    want = fit_config(exp, name)
    have = config_lib.load(run / "config.yaml")
    diff = [f"{s}.{k} is {have[s].get(k)!r}, the experiment's {v!r}"
            for s in FIT_SECTIONS for k, v in want[s].items() if have[s].get(k) != v]
    if diff:
        raise TfsacnnError(f"{run}: finished with other settings ({'; '.join(diff)}); "
                           f"use --overwrite or another --out")
    log(f"{name}: reusing finished run {run}")
    return True


def train_model(exp, name, site_dir, out, log):
    from tfsacnn.cli import fit

    run = out / "runs" / name
    if reuse(exp, name, run, log):
        return run, 0.0
    argv = ["--config", str(CONFIGS / f"{name}.yaml"), "--data", str(site_dir),
            "--out", str(run)]
    for item in fit_sets(exp):
        argv += ["--set", item]
    if (run / "checkpoints").is_dir() and (run / "config.yaml").is_file():
        argv.append("--resume")
    elif run.exists():
        argv.append("--overwrite")
    log(f"{name}: python -m tfsacnn.fit {' '.join(argv)}")
    t = time.perf_counter()
    rc = fit.main(argv)
    if rc != 0:
        raise TfsacnnError(f"{run}: tfsacnn.fit failed (exit {rc})")
    return run, time.perf_counter() - t


TORCH_CORR_TOLERANCE = 5e-3   # GPU (TF32) vs CPU float32; another site differs by far more


def torch_source(torch_dir, name):
    """(avg_*.pth path, history dict) of scripts/train_torch.py's DIR/<name>/, checked."""
    from tfsacnn.files import read_json

    src = pathlib.Path(torch_dir) / name
    pths, hist_path = sorted(src.glob("avg_*.pth")), src / "history.json"
    if len(pths) != 1 or not hist_path.is_file():
        raise TfsacnnError(f"{src}: expected one avg_*.pth and history.json "
                           f"(scripts/train_torch.py train --out {src})")
    hist = read_json(hist_path)
    if not isinstance(hist, dict) or hist.get("model") != name:
        model = hist.get("model") if isinstance(hist, dict) else None
        raise TfsacnnError(f"{hist_path}: trains {model!r}, not {name!r}")
    return pths[0], hist


def import_torch_model(exp, name, torch_dir, site_dir, out, split, log):
    """runs/<name> from scripts/train_torch.py's DIR/<name>/ (avg_*.pth, history.json)."""
    import numpy as np

    from tfsacnn import config as config_lib
    from tfsacnn import interop
    from tfsacnn.evaluation.evaluate import evaluate_run, save_metrics

    run = out / "runs" / name
    if reuse(exp, name, run, log):
        return run
    pth, hist = torch_source(torch_dir, name)
    src = pth.parent
    log(f"{name}: importing {pth} ({hist['epochs_done']} of {hist['epochs_planned']} "
        f"epochs trained)")
    interop.write_run(name, [str(pth)], run, overwrite=run.exists())
    top_k = exp["eval"].get("top_k", 10)
    entry, info = evaluate_run(run, site_dir, "val", top_k)
    got = [np.nan if c is None else c for c in entry["per_neuron"]["corr"]]
    if len(got) != len(hist["best_val_corr"]):
        raise TfsacnnError(f"{src / 'history.json'}: {len(hist['best_val_corr'])} neurons, "
                           f"{site_dir} has {len(got)}")
    off = float(np.nanmax(np.abs(np.subtract(got, hist["best_val_corr"]))))
    if not off <= TORCH_CORR_TOLERANCE:
        raise TfsacnnError(f"{src}: val CORR here differs from the training's by up to {off:.3f}: "
                           f"trained on another site? (site arguments must match)")
    want = fit_config(exp, name)
    if hist["epochs_planned"] != want["train"]["epochs"]:
        raise TfsacnnError(f"{src / 'history.json'}: trained for {hist['epochs_planned']} "
                           f"epochs, the experiment's train.epochs is {want['train']['epochs']}")
    cfg = config_lib.load(run / "config.yaml")     # record the training settings it had
    config_lib.dump({**cfg, "train": want["train"], "eval": want["eval"]}, run / "config.yaml")
    entries = {"val": entry}
    if split != "val":
        entries[split] = evaluate_run(run, site_dir, split, top_k)[0]
    write_text(run / "torch_history.json", json.dumps(hist, indent=1))
    # metrics.json last, in one write: its presence marks the run finished
    save_metrics(run, entries, info, selection_split="val", best_epoch=hist["best_epoch"],
                 trained_with=f"scripts/train_torch.py ({hist['epochs_done']} of "
                              f"{hist['epochs_planned']} epochs), imported from {src}")
    return run


def reference_scores(site_dir, split, top_k):
    """Per-neuron CORR/PT of the ground truth and of the CRF-only model neuron on `split`."""
    import numpy as np

    from data_prep import v1_model

    from tfsacnn import data as data_lib
    from tfsacnn import metrics as metrics_lib

    gt_path = site_dir / "ground_truth.npz"
    with np.load(gt_path, allow_pickle=False) as z:
        ceiling = z["noise_ceiling" if split == "val" else f"noise_ceiling_{split}"].astype(np.float64)
        has_surround = z["has_surround"].astype(bool)
    params = v1_model.load_params(gt_path)
    images, target = data_lib.load_numpy(site_dir, split, verify=False)
    # noise-free responses recomputed from the images as read, rather than taken from
    # ground_truth.npz `<split>_noise_free` (generation order): load_numpy interleaves the
    # shards of a split that has several, so only the recomputed ones are aligned for sure
    drives = v1_model.drives(images[..., 0].astype(np.float64), params)
    clean = v1_model.combine(drives, params, context=True)
    crf_only = v1_model.combine(drives, params, context=False)
    k = min(top_k, len(target))
    refs = {"ground truth": metrics_lib.evaluate(target, clean, top_k=k),
            "CRF-only truth": metrics_lib.evaluate(target, crf_only, top_k=k)}
    truth = {"images": images, "clean": clean, "crf_only": crf_only}
    return refs, ceiling, has_surround, truth


def surround_capture(runs, neurons, truth, batch_size=250):
    """Per run, per neuron: partial r of the model's prediction with the noise-free
    response, controlling for the CRF-only truth (metrics.partial_corr): the share of the
    surround's effect a model reproduces beyond the CRF (0 for a surround-blind model,
    NaN for control neurons, whose surround part is 0). -> {run name: (n,) float64}."""
    import keras
    import numpy as np

    from tfsacnn import metrics as metrics_lib
    from tfsacnn.evaluation.analyze import load_run

    out = {}
    for name, run in runs.items():
        model = load_run(run)["model"]   # one-line error for a missing or bad model.keras
        pred = model.predict(truth["images"], batch_size=batch_size, verbose=0)
        out[name] = metrics_lib.partial_corr(truth["clean"][:, neurons],
                                             np.asarray(pred, np.float64),
                                             truth["crf_only"][:, neurons])
        keras.backend.clear_session()
    return out


# --------------------------------------------------------------------------- report
def _ceiling_fractions(corr, ceiling):
    import numpy as np

    ok = np.isfinite(corr) & np.isfinite(ceiling) & (ceiling > 0)
    if not ok.any():
        return math.nan, math.nan
    return (float(corr[ok].mean() / ceiling[ok].mean()),
            float(np.mean(corr[ok] / ceiling[ok])))


def _paired_table(runs, model_names, baseline, split, groups, nc, per_run):
    """compare.compare_runs grouped by surround, plus noise-ceiling fractions per row."""
    import numpy as np

    from tfsacnn.evaluation import compare

    dirs = [str(runs[n]) for n in model_names]
    df = compare.compare_runs(dirs, baseline=str(runs[baseline]), split=split,
                              group_by_surround=True,
                              peaks=compare.has_peaks(dirs + [str(runs[baseline])], split))
    by_dir = {str(runs[n]): n for n in model_names}
    frac_mean, frac_per = [], []
    for _, r in df.iterrows():
        sel = groups[r["group"]]
        corr = per_run[by_dir[r["run"]]]["per_neuron"]["corr"]
        a, b = _ceiling_fractions(corr[sel], nc[sel])
        frac_mean.append(a)
        frac_per.append(b)
    df["noise_ceiling_mean"] = [float(np.nanmean(nc[groups[g]])) for g in df["group"]]
    df["corr_over_nc"] = frac_mean
    df["mean_corr_i_over_nc_i"] = frac_per
    df["run"] = [by_dir[r] for r in df["run"]]
    df["baseline"] = baseline
    df["split"] = split
    return df


def _contrast(per_run, model, baseline, groups):
    """Is model - baseline larger on surround than on control neurons? Per metric:
    mean paired difference in each group and a two-sided Mann-Whitney U p-value."""
    import numpy as np
    from scipy import stats

    from tfsacnn.evaluation import compare

    out = {"model": model, "baseline": baseline}
    for m in compare.METRICS:
        d = (per_run[model]["per_neuron"][m] - per_run[baseline]["per_neuron"][m]) * compare._SCALE[m]
        a, b = d[groups["surround"]], d[groups["control"]]
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        out[f"{m}_diff_surround"] = float(a.mean()) if len(a) else math.nan
        out[f"{m}_diff_control"] = float(b.mean()) if len(b) else math.nan
        p = math.nan
        if len(a) and len(b) and np.ptp(np.concatenate([a, b])) > 0:
            p = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
        out[f"{m}_p_surround_vs_control"] = p
    return out


def build_report(exp, out, runs, site_dir, split):
    """-> (markdown str, table DataFrame, references DataFrame, summary dict)."""
    import numpy as np
    import pandas as pd

    from tfsacnn.evaluation import compare

    names = list(runs)
    base = exp["baseline"]
    top_k = exp["eval"].get("top_k", 10)
    refs, ceiling, has_surround, truth = reference_scores(site_dir, split, top_k)
    per_run = {n: compare.load_run(runs[n], split) for n in names}
    neurons = per_run[base]["neurons"]
    for n in names:   # compare_runs refuses different neuron sets; align our copies too
        idx = {v: i for i, v in enumerate(per_run[n]["neurons"].tolist())}
        order = np.array([idx[v] for v in neurons.tolist()])
        per_run[n]["per_neuron"] = {k: v[order] for k, v in per_run[n]["per_neuron"].items()}
    groups = {"surround": has_surround[neurons], "control": ~has_surround[neurons]}
    nc = ceiling[neurons]

    tables = [_paired_table(runs, names, base, split, groups, nc, per_run)]
    for model, pbase in exp["pairs"]:
        if pbase == base:
            continue
        t = _paired_table(runs, [pbase, model], pbase, split, groups, nc, per_run)
        tables.append(t[~t["is_baseline"]])
    df = pd.concat(tables, ignore_index=True)
    contrasts = [_contrast(per_run, m, base, groups) for m in names if m != base]
    contrasts += [_contrast(per_run, m, b, groups) for m, b in exp["pairs"] if b != base]
    capture = _capture_rows(surround_capture(runs, neurons, truth), groups["surround"], base,
                            exp["pairs"])

    # reference rows (not models): the ground truth and its CRF-only version
    ref_rows = []
    for gname, sel in groups.items():
        if not sel.any():
            continue
        for rname, sc in refs.items():
            corr = sc["corr"][neurons][sel]
            a, b = _ceiling_fractions(corr, nc[sel])
            ref_rows.append({"group": gname, "reference": rname, "n_neurons": int(sel.sum()),
                             "corr": float(np.nanmean(corr)),
                             "pt_s_pct": 100 * float(np.nanmean(sc["pt_s"][neurons][sel])),
                             "pt_j_pct": 100 * float(np.nanmean(sc["pt_j"][neurons][sel])),
                             "corr_over_nc": a, "mean_corr_i_over_nc_i": b})
    refs_df = pd.DataFrame(ref_rows)

    paired = {}
    for _, r in df[~df["is_baseline"]].iterrows():
        paired[f"{r['group']}/{r['model']}-{r['baseline']}"] = {
            m: {"diff": _clean(r[f"{compare._COL[m]}_diff"]), "p": _clean(r[f"{m}_p"]),
                "n_improved": _int(r[f"{m}_n_improved"]), "n_paired": _int(r[f"{m}_n_paired"]),
                "better_p05": bool(r[f"{compare._COL[m]}_diff"] > 0 and r[f"{m}_p"] < ALPHA)}
            for m in compare.METRICS}
    key = "surround/ff_sa_cnn-ff_cnn"
    criterion = None
    if key in paired:
        criterion = {m: paired[key][m]["better_p05"] for m in compare.METRICS}

    md = _markdown(exp, df, refs_df, contrasts, split, criterion, capture)
    summary = {"experiment": exp, "split": split, "alpha": ALPHA,
               "criterion_surround_ff_sa_cnn_beats_ff_cnn": criterion,
               "paired": paired, "surround_vs_control": contrasts,
               "surround_captured": capture,
               "table": json.loads(df.to_json(orient="records")),
               "references": json.loads(refs_df.to_json(orient="records"))}
    return md, df, refs_df, summary


def _capture_rows(capture, surround, base, pairs):
    """Surround captured (partial r) on surround neurons: mean ± s.e.m. per model, paired
    against the baseline (and each extra pair's baseline)."""
    from tfsacnn.evaluation import compare

    against = {m: [base] for m in capture if m != base}
    for m, b in pairs:
        if b != base:
            against.setdefault(m, []).append(b)
    rows = []
    for m, r in capture.items():
        mean, sem = compare._mean_sem(r[surround])
        row = {"model": m, "mean": _clean(mean), "sem": _clean(sem),
               "per_neuron": [_clean(x) for x in r[surround]], "vs": {}}
        for b in against.get(m, []):
            row["vs"][b] = {k: _clean(v) if k in ("diff", "p") else v
                            for k, v in compare.paired(r[surround], capture[b][surround]).items()}
        rows.append(row)
    return rows


def _clean(x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _int(x):
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


def _f(x, fmt):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _markdown(exp, df, refs_df, contrasts, split, criterion, capture=()):
    from tfsacnn.evaluation import compare

    s = exp["site"]
    core = exp["model"].get("core", "independent")
    lines = [(f"Site: {s['neurons']} neurons (surround fraction {s['surround_fraction']}), "
             f"{s['train']} train / {s['val']} val / {s['test']} test images, "
             f"{s['repeats']} repeats, seed {s['seed']}. Training ({core} core): "
             f"{', '.join(f'{k}={v}' for k, v in exp['train'].items()) or 'config defaults'}; "
             f"best epoch chosen on {exp['eval'].get('selection_split', 'val')} "
             f"{'(per neuron)' if core == 'independent' else '(by mean CORR: shared core)'}. "
             f"Reported split: **{split}**. Δ columns: paired over the neurons of each group "
             f"against the row's baseline (mean difference, neurons improved / paired, "
             f"two-sided Wilcoxon signed-rank p)."), ""]
    shown = df.copy()
    shown["run"] = [f"{r['model']} vs {r['baseline']}" if not r["is_baseline"] else r["model"]
                    for _, r in shown.iterrows()]
    shown = shown.sort_values("group", key=lambda g: g.map({"surround": 0, "control": 1}),
                              kind="stable")
    lines.append(compare.to_markdown(shown).rstrip("\n"))
    lines += ["", ("Is the gain larger where the surround exists? Mean paired difference "
              "(model − baseline) on surround and on control neurons, and a two-sided "
              "Mann–Whitney U p-value comparing the two groups' differences."), "",
              ("| model vs baseline | ΔCORR surround | ΔCORR control | p | ΔPT_S % surround | "
              "ΔPT_S % control | p | ΔPT_J % surround | ΔPT_J % control | p |"),
              "|---|---|---|---|---|---|---|---|---|---|"]
    for c in contrasts:
        cells = [f"{c['model']} vs {c['baseline']}"]
        for m in compare.METRICS:
            d = "+.3f" if m == "corr" else "+.1f"
            cells += [_f(c[f"{m}_diff_surround"], d), _f(c[f"{m}_diff_control"], d),
                      compare._fmt_p(c[f"{m}_p_surround_vs_control"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", ("Fraction of the noise ceiling (NC: Pearson r of the repeat-mean target with "
              "the noise-free response, from ground_truth.npz). `CORR/NC` = mean CORR / mean NC "
              "over the group's neurons; `mean(CORR_i/NC_i)` = per-neuron ratio, averaged."), "",
              "| group | model | mean NC | CORR/NC | mean(CORR_i/NC_i) |", "|---|---|---|---|---|"]
    for _, r in shown.drop_duplicates(["group", "model"]).iterrows():
        lines.append(f"| {r['group']} | {r['model']} | {_f(r['noise_ceiling_mean'], '.3f')} | "
                     f"{_f(r['corr_over_nc'], '.3f')} | {_f(r['mean_corr_i_over_nc_i'], '.3f')} |")
    if len(refs_df):
        lines += ["", ("Reference predictors (not fitted): `ground truth` = the noise-free response "
                  "(its CORR is the noise ceiling); `CRF-only truth` = the same model neuron with "
                  "its surround terms held at their means, the best a surround-blind model can do."),
                  "", "| group | reference | neurons | CORR | PT_S % | PT_J % | CORR/NC |",
                  "|---|---|---|---|---|---|---|"]
        for _, r in refs_df.iterrows():
            lines.append(f"| {r['group']} | {r['reference']} | {r['n_neurons']} | "
                         f"{_f(r['corr'], '.3f')} | {_f(r['pt_s_pct'], '.1f')} | "
                         f"{_f(r['pt_j_pct'], '.1f')} | {_f(r['corr_over_nc'], '.3f')} |")
    if capture:
        lines += ["", ("Surround captured, on surround neurons: partial r of the prediction with "
                  "the noise-free response, controlling for the CRF-only truth "
                  "(metrics.partial_corr); 0 = surround-blind. Paired as above."), "",
                  "| model | partial r (mean ± s.e.m.) | vs | Δ (higher, p) |", "|---|---|---|---|"]
        for r in capture:
            first = f"| {r['model']} | {_f(r['mean'], '.3f')} ± {_f(r['sem'], '.3f')} |"
            if not r["vs"]:
                lines.append(first + " baseline | |")
            for b, st in r["vs"].items():
                lines.append(f"{first} {b} | {_f(st['diff'], '+.3f')} ({st['n_improved']}/"
                             f"{st['n_paired']}, p={compare._fmt_p(st['p'])}) |")
    if criterion is not None:
        ok = ", ".join(f"{compare._LABEL[m].split()[0]} {'yes' if v else 'no'}"
                       for m, v in criterion.items())
        lines += ["", f"Criterion (surround neurons, ff_sa_cnn > ff_cnn, paired, p < {ALPHA}): {ok}."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI
def build_parser():
    p = OneLineParser(prog="python -m studies.sa_vs_cnn.experiment", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", help="experiment YAML, e.g. studies/sa_vs_cnn/sa_vs_cnn.yaml")
    p.add_argument("--out", help="output directory (overrides `out`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, value parsed as YAML, e.g. site.neurons=3 (repeatable)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output directory that holds a different experiment")
    p.add_argument("--torch", metavar="DIR",
                   help="take each model from DIR/<model>/ (scripts/train_torch.py output) "
                        "instead of training it (independent core, no model.overrides)")
    return p


def run(args):
    t_all = time.perf_counter()

    def log(msg):
        print(f"[experiment {time.perf_counter() - t_all:7.1f}s] {msg}", flush=True)

    exp = load(args.experiment, args.set, args.out)
    if args.torch:
        if exp["model"].get("core", "independent") != "independent" or exp["model"].get("overrides"):
            raise ConfigError("--torch: scripts/train_torch.py trains the paper's networks as "
                              "they are: set model.core=independent and no model.overrides")
        if not pathlib.Path(args.torch).is_dir():
            raise TfsacnnError(f"{args.torch}: no such directory")
        for name in exp["models"]:      # before the site is made: a bad DIR fails fast
            if not (pathlib.Path(exp["out"]) / "runs" / name / "metrics.json").is_file():
                torch_source(args.torch, name)
    out = prepare_out(exp, args.overwrite, log)
    split = report_split(exp)
    # wall times of the steps done so far, kept across calls that reuse finished steps
    timings = out / "timings.json"
    seconds = json.loads(timings.read_text()) if timings.is_file() else {}

    def record(step, t):
        if t > 0:
            seconds[step] = round(t, 1)
            write_text(timings, json.dumps(seconds, indent=1))

    site_dir, t_site = make_site(exp, out, log)
    record("site", t_site)
    runs = {}
    for name in exp["models"]:
        if args.torch:
            runs[name], t = import_torch_model(exp, name, args.torch, site_dir, out, split, log), 0
        else:
            runs[name], t = train_model(exp, name, site_dir, out, log)
        record(name, t)
        log(f"{name}: {'done' if t else 'reused'} ({seconds.get(name, 0):.0f} s when trained)")
    md, df, refs_df, summary = build_report(exp, out, runs, site_dir, split)
    if args.torch:
        md = (f"Models trained with scripts/train_torch.py (PyTorch, the same networks and "
              f"protocol) and imported from {args.torch}; per-neuron epochs and histories in "
              f"runs/<model>/metrics.json and torch_history.json.\n\n" + md)
    steps = ["site"] + list(exp["models"])
    seconds["total"] = round(sum(seconds.get(k, 0.0) for k in steps), 1)
    seconds["this_call"] = round(time.perf_counter() - t_all, 1)
    summary["seconds"] = seconds
    summary["command"] = "python -m studies.sa_vs_cnn.experiment " + " ".join(
        [args.experiment] + (["--out", args.out] if args.out else [])
        + [x for s in args.set for x in ("--set", s)]
        + (["--torch", args.torch] if args.torch else []))
    write_text(out / "table.md", md)
    write_text(out / "table.csv", df.to_csv(index=False))
    write_text(out / "references.csv", refs_df.to_csv(index=False))
    write_text(out / "summary.json", json.dumps(summary, indent=1))
    print(md, end="")
    log(f"wrote {out / 'table.md'}, {out / 'table.csv'}, {out / 'references.csv'} and "
        f"{out / 'summary.json'}; wall times (s): {seconds}")
    return summary


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except TfsacnnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
