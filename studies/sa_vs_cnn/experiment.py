"""Run the pre-registered SA-vs-CNN study from one YAML file: sites, training, causal test, statistics.

    python -m studies.sa_vs_cnn.experiment studies/sa_vs_cnn/sa_vs_cnn.yaml [--out DIR]
        [--set KEY=VALUE ...] [--overwrite] [--plan [--rate NEURON_IMAGES_PER_S]]

The experiment file (studies/sa_vs_cnn/sa_vs_cnn.yaml) is the pre-registration: it is
fixed before any run and declares

    preregistered  when and by what it was fixed (free text, recorded)
    out            output directory (default runs/<file stem>)
    sites          surround_models (fixed | gated), seeds, and the data_prep.synthesize
                   arguments shared by every site: neurons, surround_fraction, train,
                   val, test, repeats; gate_offset and gate_width record the gated
                   simulator's constants (checked against data_prep.v1_model's)
    models         model names (shipped configs of tfsacnn.config)
    hypotheses     [{model, baseline, group, metric}, ...]: "model > baseline on metric
                   for the group's neurons"; each is tested on every surround model
    statistics     alpha, correction (holm), wilcoxon_zero_method (zsplit), the
                   bootstrap resamples; checked against what this code does
    causal         the causal surround test: pairs per neuron, seed, seam_px
    model, train, eval   common tfsacnn.config settings of every model
    report         split: test | val (val while designing: the test split is read for
                   the final table only)

Metrics: `corr`, `pt_s`, `pt_j` (tfsacnn.metrics, on the report split), and the causal
surround test (tfsacnn.evaluation.analyze.causal_surround, on the report split's images):
`causal_corr` and `causal_slope` (a model's predicted change from swapping a neuron's
surround against the noise-free truth's change), `false_surround` (r.m.s. predicted
change / response s.d.: for controls, whose true change is 0, a false surround).

Statistics: for each hypothesis and surround model, neurons are pooled over the site
seeds (each paired within its own site): mean difference, bootstrap 95% interval,
neurons improved, two-sided Wilcoxon signed-rank p with zero differences kept
(zero_method="zsplit"), and the Holm-adjusted p over the whole family (every hypothesis x
surround model). A hypothesis holds when the difference is positive and the Holm p <
alpha. Everything else in the report is marked exploratory.

`--plan` prints the size of the study (training neuron-images, and hours at `--rate`
neuron-images/s, default 1400: tfsacnn on 2 CPU cores) and runs nothing.

OUT receives:

    experiment.yaml        the resolved experiment (a different one is refused)
    sites/<sm>_seed<k>/    the simulated sites (with ground_truth.npz)
    runs/<sm>_seed<k>/<model>/   one tfsacnn.training.train run directory per model
    scores/<sm>_seed<k>.json   that site's per-neuron scores (reused with its runs)
    neurons.csv            one row per (site, neuron, model): every metric
    table.md, summary.json the pre-registered tests and the exploratory tables
    timings.json           wall time of each step, kept when a step is reused

An existing OUT is reused (finished sites and runs are not redone) when its
experiment.yaml equals the resolved experiment; an unfinished run is resumed.
Errors are one line `error: ...`, exit status 2, before any work starts where possible.
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

import yaml  # noqa: E402

from tfsacnn.errors import ConfigError, OneLineParser, TfsacnnError, run_cli  # noqa: E402
from tfsacnn.files import parse_yaml, read_yaml, write_text  # noqa: E402

CPU_RATE = 1400          # neuron-images/s, tfsacnn's trainer on 2 CPU cores (issue #18)
SITE_KEYS = {"surround_models": ["fixed"], "seeds": [0], "neurons": 8, "surround_fraction": 0.75,
             "train": 8000, "val": 1000, "test": 1000, "repeats": 10,
             "gate_offset": None, "gate_width": None}
DEFAULTS = {
    "preregistered": None,
    "out": None,
    "sites": SITE_KEYS,
    "models": ["ff_cnn", "ff_sa_cnn"],
    "hypotheses": [],
    "statistics": {"alpha": 0.05, "correction": "holm", "wilcoxon_zero_method": "zsplit",
                   "bootstrap_resamples": 10000},
    "causal": {"pairs": 200, "seed": 0, "seam_px": 2.0},
    "model": {},
    "train": {},
    "eval": {},
    "report": {"split": "test"},
}
FIT_SECTIONS = ("model", "train", "eval")          # checked by tfsacnn.config
CHECKED = ("sites", "statistics", "causal", "report")   # their keys are ours
METRICS = ("corr", "pt_s", "pt_j", "causal_corr", "causal_slope", "false_surround")
SCALE = {"pt_s": 100.0, "pt_j": 100.0}           # shown in %
GROUPS = ("surround", "control")


# --------------------------------------------------------------------------- config
def _merge(where, base, new, path=()):
    for k, v in new.items():
        key = path + (k,)
        name = ".".join(map(str, key))
        if path == () and k not in base:
            raise ConfigError(f"{where}: unknown key {name!r} (known: {', '.join(base)})")
        if len(path) == 1 and path[0] in CHECKED and k not in DEFAULTS[path[0]]:
            raise ConfigError(f"{where}: unknown key {name!r} "
                              f"(known: {', '.join(DEFAULTS[path[0]])})")
        if isinstance(base.get(k), dict) and (path == () or path[0] in FIT_SECTIONS):
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: {name} must be a mapping")
            _merge(where, base[k], v, key)
        else:
            base[k] = copy.deepcopy(v)


def _int(v, lo):
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _check(exp, where):
    from data_prep import v1_model
    from tfsacnn import models as models_lib
    from tfsacnn.evaluation import compare

    s = exp["sites"]
    sms = s["surround_models"]
    if (not isinstance(sms, list) or not sms or len(set(sms)) != len(sms)
            or not all(m in v1_model.SURROUND_MODELS for m in sms)):
        raise ConfigError(f"{where}: sites.surround_models must be a list of distinct names from "
                          f"{', '.join(v1_model.SURROUND_MODELS)}, got {sms!r}")
    seeds = s["seeds"]
    if not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds) \
            or not all(_int(x, 0) for x in seeds):
        raise ConfigError(f"{where}: sites.seeds must be a list of distinct integers >= 0, got {seeds!r}")
    for k in ("neurons", "train", "val", "repeats"):
        if not _int(s[k], 1):
            raise ConfigError(f"{where}: sites.{k} must be an integer >= 1, got {s[k]!r}")
    if not _int(s["test"], 0):
        raise ConfigError(f"{where}: sites.test must be an integer >= 0, got {s['test']!r}")
    for k, want in (("gate_offset", v1_model.GATE_OFFSET), ("gate_width", v1_model.GATE_WIDTH)):
        if "gated" in sms and s[k] != want:
            raise ConfigError(f"{where}: sites.{k} is {s[k]!r}, but the simulator's is {want!r} "
                              f"(data_prep.v1_model; the study records the constants it ran with)")
    f = s["surround_fraction"]
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
        raise ConfigError(f"{where}: sites.surround_fraction must be in (0, 1) (both groups are "
                          f"needed), got {f!r}")
    models = exp["models"]
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models) \
            or len(set(models)) != len(models):
        raise ConfigError(f"{where}: models must be a list of distinct model names")
    for m in models:
        if m not in models_lib.names():
            raise ConfigError(f"{where}: models: unknown model {m!r} "
                              f"(known: {', '.join(models_lib.names())})")
    hyps = exp["hypotheses"]
    if not isinstance(hyps, list) or not hyps:
        raise ConfigError(f"{where}: hypotheses must be a non-empty list (the study tests them)")
    for i, h in enumerate(hyps):
        if not isinstance(h, dict) or set(h) != {"model", "baseline", "group", "metric"}:
            raise ConfigError(f"{where}: hypotheses[{i}] must have exactly model, baseline, "
                              f"group and metric, got {h!r}")
        if h["model"] not in models or h["baseline"] not in models or h["model"] == h["baseline"]:
            raise ConfigError(f"{where}: hypotheses[{i}]: model and baseline must be two "
                              f"different names from models, got {h['model']!r}, {h['baseline']!r}")
        if h["group"] not in GROUPS:
            raise ConfigError(f"{where}: hypotheses[{i}].group must be surround or control, "
                              f"got {h['group']!r}")
        if h["metric"] not in METRICS:
            raise ConfigError(f"{where}: hypotheses[{i}].metric must be one of "
                              f"{', '.join(METRICS)}, got {h['metric']!r}")
    st = exp["statistics"]
    a = st["alpha"]
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a < 1:
        raise ConfigError(f"{where}: statistics.alpha must be in (0, 1), got {a!r}")
    if st["correction"] != "holm":
        raise ConfigError(f"{where}: statistics.correction must be holm, got {st['correction']!r}")
    if st["wilcoxon_zero_method"] != compare.WILCOXON_ZERO_METHOD:
        raise ConfigError(f"{where}: statistics.wilcoxon_zero_method must be "
                          f"{compare.WILCOXON_ZERO_METHOD} (tfsacnn.compare's), "
                          f"got {st['wilcoxon_zero_method']!r}")
    if st["bootstrap_resamples"] != compare.BOOTSTRAP_RESAMPLES:
        raise ConfigError(f"{where}: statistics.bootstrap_resamples must be "
                          f"{compare.BOOTSTRAP_RESAMPLES} (tfsacnn.compare's), "
                          f"got {st['bootstrap_resamples']!r}")
    c = exp["causal"]
    if not _int(c["pairs"], 2) or not _int(c["seed"], 0):
        raise ConfigError(f"{where}: causal.pairs must be an integer >= 2 and causal.seed >= 0")
    if isinstance(c["seam_px"], bool) or not isinstance(c["seam_px"], (int, float)) or c["seam_px"] < 0:
        raise ConfigError(f"{where}: causal.seam_px must be a number >= 0, got {c['seam_px']!r}")
    split = exp["report"]["split"]
    if split not in ("val", "test"):
        raise ConfigError(f"{where}: report.split must be val or test, got {split!r}")
    if split == "test" and s["test"] == 0:
        raise ConfigError(f"{where}: report.split is test but sites.test is 0")
    if exp["eval"].get("selection_split", "val") == "test":
        raise ConfigError(f"{where}: eval.selection_split must be val: the test split is read "
                          f"for the final table only")


def load(path, sets=(), out=None):
    """The resolved experiment dict from a YAML file plus `--set` overrides (ConfigError)."""
    from tfsacnn import config as config_lib

    path = pathlib.Path(path)
    raw = read_yaml(path, ConfigError)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: an experiment must be a mapping")
    exp = copy.deepcopy(DEFAULTS)
    _merge(str(path), exp, raw)
    for item in sets:
        _merge(f"--set {item}", exp, config_lib.parse_set(item))
    if out is not None:
        exp["out"] = str(out)
    if exp["out"] is None:
        exp["out"] = f"runs/{path.stem}"
    _check(exp, str(path))
    for m in exp["models"]:        # the fit sections through the fit schema: fail early
        try:
            fit_config(exp, m)
        except ConfigError as e:
            raise ConfigError(f"{path}: {str(e).split(': ', 1)[-1]}") from None
    return exp


def fit_sets(exp):
    """The common `section.key=value` overrides of every model's fit config."""
    return [f"{section}.{k}={json.dumps(v)}" for section in FIT_SECTIONS
            for k, v in exp[section].items()]


def fit_config(exp, name, site_dir=None):
    """The resolved tfsacnn config of model `name` (its shipped config + the experiment's)."""
    from tfsacnn import config as config_lib

    sets = fit_sets(exp) + ([f"data.dir={json.dumps(str(site_dir))}"] if site_dir else [])
    return config_lib.load(name, sets)


def site_names(exp):
    """[(name, surround_model, seed)] of every site, in run order."""
    return [(f"{sm}_seed{k}", sm, k) for sm in exp["sites"]["surround_models"]
            for k in exp["sites"]["seeds"]]


def plan(exp, rate=CPU_RATE):
    """The study's size: training neuron-images (neurons x train images x epochs, summed
    over sites and models) and the hours they take at `rate` neuron-images/s."""
    s = exp["sites"]
    epochs = {m: fit_config(exp, m)["train"]["epochs"] for m in exp["models"]}
    per_site = {m: s["neurons"] * s["train"] * e for m, e in epochs.items()}
    n_sites = len(site_names(exp))
    total = n_sites * sum(per_site.values())
    return {"sites": n_sites, "neurons_per_site": s["neurons"],
            "neurons_per_surround_model": {
                "surround": len(s["seeds"]) * round(s["surround_fraction"] * s["neurons"]),
                "control": len(s["seeds"]) * (s["neurons"] - round(s["surround_fraction"] * s["neurons"]))},
            "models": exp["models"], "epochs": epochs, "train_neuron_images": total,
            "rate_neuron_images_per_s": rate, "training_hours": round(total / rate / 3600, 2)}


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
        elif read_yaml(record) != parse_yaml(text, record):
            raise TfsacnnError(f"{out}: holds a different experiment ({record}); use "
                               f"--overwrite to replace it, or another --out")
        else:
            log(f"reusing {out} (same experiment.yaml)")
    out.mkdir(parents=True, exist_ok=True)
    write_text(record, text)
    return out


def make_site(exp, site_dir, surround_model, seed, log):
    """Simulate one site into `site_dir` (reused when finished). -> seconds spent."""
    from data_prep.synthesize import synthesize

    if (site_dir / "manifest.json").is_file() and (site_dir / "ground_truth.npz").is_file():
        log(f"site {site_dir.name}: reusing")
        return 0.0
    t = time.perf_counter()
    s = exp["sites"]
    log(f"site {site_dir.name}: {s['neurons']} neurons ({surround_model} surround, seed {seed})")
    synthesize(site_dir, neurons=s["neurons"], train=s["train"], val=s["val"], test=s["test"],
               repeats=s["repeats"], seed=seed, surround_fraction=float(s["surround_fraction"]),
               surround_model=surround_model, overwrite=True, progress=False)
    return time.perf_counter() - t


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
    log(f"{run.parent.name}/{name}: reusing finished run")
    return True


def train_model(exp, name, site_dir, run, log):
    """Train model `name` on `site_dir` into `run` with tfsacnn.training.train. -> seconds."""
    from tfsacnn.training import train

    if reuse(exp, name, run, log):
        return 0.0
    cfg = fit_config(exp, name, site_dir)
    resume = (run / "checkpoints").is_dir() and (run / "config.yaml").is_file()
    log(f"{run.parent.name}/{name}: training ({'resumed' if resume else 'new'})")
    t = time.perf_counter()
    train(cfg, run, resume=resume, overwrite=run.exists() and not resume)
    return time.perf_counter() - t


# --------------------------------------------------------------------------- scoring
def score_site(exp, site, sm, seed, runs, split):
    """Per-neuron rows of one site: every model's metrics on `split` plus the causal test.

    runs: {model: run dir}. -> list of dicts (site, surround_model, seed, neuron,
    has_surround, noise_ceiling, model, and METRICS)."""
    import keras
    import numpy as np

    from data_prep import v1_model
    from tfsacnn import data as data_lib
    from tfsacnn.evaluation import analyze, compare

    gt = site / "ground_truth.npz"
    with np.load(gt, allow_pickle=False) as z:
        ceiling = z["noise_ceiling" if split == "val" else f"noise_ceiling_{split}"].astype(float)
    params = v1_model.load_params(gt)
    images, _ = data_lib.load_numpy(site, split, verify=False)
    c = exp["causal"]
    rows = []
    for name, run in runs.items():
        per = compare.load_run(run, split)
        neurons = per["neurons"]
        model = analyze.load_run(run)["model"]
        res = analyze.causal_surround(analyze.model_predictor(model), images,
                                      v1_model.select_neurons(params, neurons), c["pairs"],
                                      seed=c["seed"], seam=float(c["seam_px"]))
        keras.backend.clear_session()
        for i, n in enumerate(neurons.tolist()):
            rows.append({"site": site.name, "surround_model": sm, "seed": seed, "neuron": n,
                         "has_surround": bool(params["has_surround"][n]),
                         "noise_ceiling": float(ceiling[n]), "model": name,
                         **{m: float(per["per_neuron"][m][i]) for m in ("corr", "pt_s", "pt_j")},
                         "causal_corr": float(res["corr"][i]), "causal_slope": float(res["slope"][i]),
                         "false_surround": float(res["change_rms"][i])})
    return rows


def _values(df, sm, group, model, metric):
    """(site, neuron)-indexed values of one model: a pandas Series."""
    sel = df[(df["surround_model"] == sm) & (df["model"] == model)
             & (df["has_surround"] == (group == "surround"))]
    return sel.set_index(["site", "neuron"])[metric] * SCALE.get(metric, 1.0)


def paired_test(df, sm, group, model, baseline, metric):
    """compare.paired of model vs baseline over one group's neurons, pooled over sites."""
    from tfsacnn.evaluation import compare

    a = _values(df, sm, group, model, metric)
    b = _values(df, sm, group, baseline, metric).reindex(a.index)
    return compare.paired(a.to_numpy(float), b.to_numpy(float))


def statistics(exp, df):
    """The pre-registered family: one entry per hypothesis x surround model, Holm-corrected."""
    from tfsacnn.evaluation import compare

    tests = []
    for sm in exp["sites"]["surround_models"]:
        for i, h in enumerate(exp["hypotheses"]):
            st = paired_test(df, sm, h["group"], h["model"], h["baseline"], h["metric"])
            tests.append({"id": f"H{i + 1}", "surround_model": sm, **h, **st})
    adj = compare.holm([t["p"] for t in tests])
    alpha = exp["statistics"]["alpha"]
    for t, p in zip(tests, adj):
        t["p_holm"] = None if math.isnan(p) else float(p)
        t["holds"] = bool(t["p_holm"] is not None and t["diff"] > 0 and t["p_holm"] < alpha)
    return tests


def descriptive(exp, df):
    """Exploratory: mean +- s.e.m. of every metric per surround model, group and model."""
    from tfsacnn.evaluation import compare

    rows = []
    for sm in exp["sites"]["surround_models"]:
        for group in GROUPS:
            for model in exp["models"]:
                row = {"surround_model": sm, "group": group, "model": model}
                for m in METRICS + ("noise_ceiling",):
                    v = _values(df, sm, group, model, m).to_numpy(float)
                    row["n"] = len(v)
                    row[m], row[f"{m}_sem"] = compare.mean_sem(v)
                rows.append(row)
    return rows


def exploratory_pairs(exp, df):
    """Exploratory: every (model, baseline) pair of the hypotheses on every metric and
    group, uncorrected."""
    pairs = list(dict.fromkeys((h["model"], h["baseline"]) for h in exp["hypotheses"]))
    return [{"surround_model": sm, "group": g, "model": a, "baseline": b, "metric": m,
             **paired_test(df, sm, g, a, b, m)}
            for sm in exp["sites"]["surround_models"] for g in GROUPS for a, b in pairs
            for m in METRICS]


# --------------------------------------------------------------------------- report
def _f(x, fmt):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _digits(metric):
    return "+.1f" if metric in SCALE else "+.3f"


def markdown(exp, split, tests, desc, explore):
    from tfsacnn.evaluation import compare

    s = exp["sites"]
    st = exp["statistics"]
    lines = [
        f"Pre-registered: {exp['preregistered'] or '(not stated)'}.",
        "",
        (f"Sites: {', '.join(s['surround_models'])} surround x seeds {s['seeds']}; each "
         f"{s['neurons']} neurons (surround fraction {s['surround_fraction']}), {s['train']} train / "
         f"{s['val']} val / {s['test']} test images, {s['repeats']} repeats. Models: "
         f"{', '.join(exp['models'])}; training: "
         f"{', '.join(f'{k}={v}' for k, v in exp['train'].items()) or 'config defaults'}; "
         f"best epoch per neuron on val. Reported split: **{split}**."),
        "",
        "### Pre-registered hypotheses",
        "",
        (f"Model > baseline, paired over the group's neurons pooled over the site seeds. "
         f"Mean difference with a bootstrap 95% interval ({st['bootstrap_resamples']} "
         f"resamples of neurons), neurons improved / paired, two-sided Wilcoxon signed-rank p "
         f"(zero differences kept: zero_method=\"{st['wilcoxon_zero_method']}\"), and the "
         f"Holm-adjusted p over all {len(tests)} tests. Holds: difference > 0 and Holm p < "
         f"{st['alpha']}. PT in %."),
        "",
        "| id | surround model | hypothesis | Δ [95% CI] | improved | p | Holm p | holds |",
        "|---|---|---|---|---|---|---|---|"]
    for t in tests:
        d = _digits(t["metric"])
        lines.append(
            f"| {t['id']} | {t['surround_model']} | {t['model']} > {t['baseline']}, "
            f"{t['metric']}, {t['group']} neurons | {_f(t['diff'], d)} [{_f(t['ci_low'], d)}, "
            f"{_f(t['ci_high'], d)}] | {t['n_improved']}/{t['n_paired']} | "
            f"{compare.format_p(t['p'])} | {compare.format_p(t['p_holm'] if t['p_holm'] is not None else math.nan)} | "
            f"{'yes' if t['holds'] else 'no'} |")
    lines += ["", "### Exploratory (not pre-registered; no correction)", "",
              ("Means ± s.e.m. over neurons pooled across seeds. causal_corr / causal_slope: "
               "the model's predicted change from swapping the surround against the noise-free "
               "truth's (surround neurons; NaN for controls, whose true change is 0). "
               "false_surround: r.m.s. predicted change / response s.d. (for controls, a false "
               "surround). NC: noise ceiling."), "",
              "| surround model | group | model | n | CORR | PT_S % | PT_J % | causal corr | causal slope | false surround | NC |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in desc:
        cells = [r["surround_model"], r["group"], r["model"], str(r["n"])]
        for m in METRICS + ("noise_ceiling",):
            d = ".1f" if m in SCALE else ".3f"
            cells.append(f"{_f(r[m], d)} ± {_f(r[f'{m}_sem'], d)}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Paired differences on every metric (uncorrected):", "",
              "| surround model | group | model vs baseline | metric | Δ [95% CI] | improved | p |",
              "|---|---|---|---|---|---|---|"]
    for t in explore:
        d = _digits(t["metric"])
        lines.append(f"| {t['surround_model']} | {t['group']} | {t['model']} vs {t['baseline']} | "
                     f"{t['metric']} | {_f(t['diff'], d)} [{_f(t['ci_low'], d)}, {_f(t['ci_high'], d)}] | "
                     f"{t['n_improved']}/{t['n_paired']} | {compare.format_p(t['p'])} |")
    return "\n".join(lines) + "\n"


def _clean(obj):
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item"):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


# --------------------------------------------------------------------------- CLI
def build_parser():
    p = OneLineParser(prog="python -m studies.sa_vs_cnn.experiment", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", help="experiment YAML, e.g. studies/sa_vs_cnn/sa_vs_cnn.yaml")
    p.add_argument("--out", help="output directory (overrides `out`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, value parsed as YAML, e.g. sites.neurons=3 (repeatable)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output directory that holds a different experiment")
    p.add_argument("--plan", action="store_true",
                   help="print the study's size (neuron-images, hours at --rate) and run nothing")
    p.add_argument("--rate", type=float, default=CPU_RATE,
                   help=f"training neuron-images/s for --plan (default {CPU_RATE}: 2 CPU cores)")
    return p


def run(args):
    import pandas as pd

    t_all = time.perf_counter()

    def log(msg):
        print(f"[experiment {time.perf_counter() - t_all:7.1f}s] {msg}", flush=True)

    exp = load(args.experiment, args.set, args.out)
    if args.plan:
        print(json.dumps(plan(exp, args.rate), indent=1))
        return None
    out = prepare_out(exp, args.overwrite, log)
    split = exp["report"]["split"]
    timings = out / "timings.json"
    seconds = json.loads(timings.read_text()) if timings.is_file() else {}

    def record(step, t):
        if t > 0:
            seconds[step] = round(t, 1)
            write_text(timings, json.dumps(seconds, indent=1))

    rows = []
    for name, sm, seed in site_names(exp):
        site = out / "sites" / name
        t_site = make_site(exp, site, sm, seed, log)
        record(f"site {name}", t_site)
        runs, trained = {}, t_site > 0
        for m in exp["models"]:
            runs[m] = out / "runs" / name / m
            t = train_model(exp, m, site, runs[m], log)
            record(f"{name}/{m}", t)
            trained |= t > 0
        scores = out / "scores" / f"{name}.json"
        if scores.is_file() and not trained:       # the same site and runs: the same scores
            rows += json.loads(scores.read_text())
            continue
        t = time.perf_counter()
        site_rows = score_site(exp, site, sm, seed, runs, split)
        scores.parent.mkdir(exist_ok=True)
        write_text(scores, json.dumps(site_rows, indent=1))
        rows += site_rows
        record(f"score {name}", time.perf_counter() - t)
    df = pd.DataFrame(rows)
    tests = statistics(exp, df)
    desc = descriptive(exp, df)
    explore = exploratory_pairs(exp, df)
    md = markdown(exp, split, tests, desc, explore)
    seconds["this_call"] = round(time.perf_counter() - t_all, 1)
    command = "python -m studies.sa_vs_cnn.experiment " + " ".join(
        [args.experiment] + (["--out", args.out] if args.out else [])
        + [x for s in args.set for x in ("--set", s)])
    summary = _clean({"experiment": exp, "split": split, "command": command,
                      "hypotheses": tests, "exploratory": {"descriptive": desc, "paired": explore},
                      "plan": plan(exp), "seconds": seconds})
    write_text(out / "neurons.csv", df.to_csv(index=False))
    write_text(out / "table.md", md)
    write_text(out / "summary.json", json.dumps(summary, indent=1))
    print(md, end="")
    log(f"wrote {out / 'table.md'}, {out / 'neurons.csv'} and {out / 'summary.json'}")
    return summary


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args), path=args.out)


if __name__ == "__main__":
    sys.exit(main())
