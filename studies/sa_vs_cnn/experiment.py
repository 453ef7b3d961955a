"""Run the pre-registered SA-vs-CNN study from one YAML file, one unit (site) at a time,
then score the sealed test split once.

    python -m studies.sa_vs_cnn.experiment CONFIG.yaml --out WORKDIR --results RESULTSDIR
        [--time-limit-s S] [--rate R] [--set KEY=VALUE ...] [--plan]
    python -m studies.sa_vs_cnn.experiment CONFIG.yaml --out WORKDIR --results RESULTSDIR
        --final [--allow-mixed-code]

The experiment file (studies/sa_vs_cnn/sa_vs_cnn_gpu.yaml; sa_vs_cnn.yaml is the CPU
pilot) is the pre-registration, fixed before any unit runs:

    preregistered  when and by what it was fixed (free text, recorded)
    sites          surround_models, seeds ({surround model: [seeds]}, every seed distinct
                   across the study, so no two sites share control neurons), and the
                   data_prep.synthesize arguments shared by every site
    unit_order     the order the units (sites, "<surround model>_seed<k>") run in
    models         model names (shipped configs of tfsacnn.config)
    hypotheses     the confirmatory family: [{id, model, baseline, metric, contrast,
                   direction}], each tested on every surround model. contrast `did`: the
                   surround neurons' paired difference minus the controls' (one-sided
                   Wilcoxon rank-sum); `surround`: the surround neurons' paired difference
                   (one-sided Wilcoxon signed-rank). direction: greater | less
    statistics     alpha, correction (holm), wilcoxon_zero_method, bootstrap_resamples
    causal         the triple test: triples per neuron, seed, seam_px, centre_fraction
    sample_size    the pilot's per-neuron s.d. and the power analysis (recorded)
    model, train, eval   common tfsacnn.config settings (eval.report_splits must be [val])

A unit synthesizes its site into WORKDIR/sites/<unit>, trains every model on it
(WORKDIR/runs/<unit>/<model>, selection and report on val only), scores val (CORR, PT_S,
PT_J, and the causal triple test on val images), writes every model's predictions on the
test images and on the test causal stimuli to RESULTSDIR/<unit>.sealed.npz (float32; made
from the test images and the simulator's parameters only: the test responses, stored in
the same shards, are dropped as read, never used or scored), then RESULTSDIR/<unit>.json
with the code commit (env TFSACNN_COMMIT, else `git rev-parse HEAD`) and the sha256 of the
resolved config. Units with a result file are skipped, so calls resume one another;
a unit that would not fit in --time-limit-s (estimated from the previous unit of this
call, else from --rate) is not started.

The seal: nothing before --final uses a test response or scores test (the config must say
eval.report_splits: [val]; the unit records hold no test score). --final refuses while a
unit is unfinished or was trained under another commit/config (unless
--allow-mixed-code, said in the report), scores test for every unit at once from the
sealed predictions and the sites' test responses (a site missing from WORKDIR is
synthesized again from its seed; its test images must hash as sealed; no weights are
needed), runs the confirmatory tests (Holm over the family; a hypothesis holds
only when its Holm p < alpha and its Hodges-Lehmann estimate is in the registered
direction) and writes RESULTSDIR/final/{table.md, summary.json, neurons.csv}. It runs
once: an existing RESULTSDIR/final/summary.json is refused.
Errors are one line `error: ...`, exit status 2.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import yaml  # noqa: E402

from tfsacnn.errors import ConfigError, OneLineParser, TfsacnnError, run_cli  # noqa: E402
from tfsacnn.files import parse_yaml, read_yaml, write_text  # noqa: E402

CPU_RATE = 1400          # neuron-images/s, tfsacnn's trainer on 2 CPU cores
UNIT_OVERHEAD_S = 30     # per unit: synthesis, scoring, start-up (for the --time-limit-s estimate)
SITE_KEYS = {"surround_models": ["fixed"], "seeds": {"fixed": [0]}, "neurons": 8,
             "surround_fraction": 0.75, "train": 8000, "val": 1000, "test": 1000, "repeats": 10,
             "gate_offset": None, "gate_width": None}
DEFAULTS = {
    "preregistered": None,
    "out": None,
    "sites": SITE_KEYS,
    "unit_order": None,
    "models": ["ff_cnn", "ff_sa_cnn"],
    "hypotheses": [],
    "statistics": {"alpha": 0.05, "correction": "holm", "wilcoxon_zero_method": "zsplit",
                   "bootstrap_resamples": 10000},
    "causal": {"triples": 200, "seed": 0, "seam_px": 2.0, "centre_fraction": 0.2},
    "sample_size": {},
    "model": {},
    "train": {},
    "eval": {},
}
FIT_SECTIONS = ("model", "train", "eval")          # checked by tfsacnn.config
CHECKED = ("sites", "statistics", "causal")        # their keys are ours
METRICS = ("corr", "pt_s", "pt_j", "causal_fve", "causal_corr", "false_surround")
SCALE = {"pt_s": 100.0, "pt_j": 100.0}           # shown in %
GROUPS = ("surround", "control")
CONTRASTS = ("did", "surround")
HYPOTHESIS_KEYS = {"id", "model", "baseline", "metric", "contrast", "direction"}


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
        if isinstance(base.get(k), dict) and (path == () or path[0] in FIT_SECTIONS) \
                and k != "sample_size":
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: {name} must be a mapping")
            _merge(where, base[k], v, key)
        else:
            base[k] = copy.deepcopy(v)


def _int(v, lo):
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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
    if not isinstance(seeds, dict) or set(seeds) != set(sms):
        raise ConfigError(f"{where}: sites.seeds must map each surround model "
                          f"({', '.join(sms)}) to its list of seeds, got {seeds!r}")
    flat = [x for sm in sms for x in (seeds[sm] if isinstance(seeds[sm], list) else [None])]
    if not all(isinstance(seeds[sm], list) and seeds[sm] for sm in sms) \
            or not all(_int(x, 0) for x in flat) or len(set(flat)) != len(flat):
        raise ConfigError(f"{where}: sites.seeds must be non-empty lists of integers >= 0, "
                          f"distinct across the whole study (a seed shared by two surround "
                          f"models gives them the same control neurons), got {seeds!r}")
    for k in ("neurons", "train", "val", "repeats"):
        if not _int(s[k], 1):
            raise ConfigError(f"{where}: sites.{k} must be an integer >= 1, got {s[k]!r}")
    if not _int(s["test"], 1):
        raise ConfigError(f"{where}: sites.test must be an integer >= 1 (the sealed split), "
                          f"got {s['test']!r}")
    for k, want in (("gate_offset", v1_model.GATE_OFFSET), ("gate_width", v1_model.GATE_WIDTH)):
        if "gated" in sms and s[k] != want:
            raise ConfigError(f"{where}: sites.{k} is {s[k]!r}, but the simulator's is {want!r} "
                              f"(data_prep.v1_model; the study records the constants it ran with)")
    f = s["surround_fraction"]
    if not _number(f) or not 0 < f < 1:
        raise ConfigError(f"{where}: sites.surround_fraction must be in (0, 1) (both groups are "
                          f"needed), got {f!r}")
    names = [n for n, _, _ in site_names(exp)]
    order = exp["unit_order"]
    if not isinstance(order, list) or sorted(map(str, order)) != sorted(names) \
            or len(set(order)) != len(order):
        raise ConfigError(f"{where}: unit_order must list every unit once "
                          f"({', '.join(names)}), got {order!r}")
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
        if not isinstance(h, dict) or set(h) != HYPOTHESIS_KEYS:
            raise ConfigError(f"{where}: hypotheses[{i}] must have exactly "
                              f"{', '.join(sorted(HYPOTHESIS_KEYS))}, got {h!r}")
        if h["model"] not in models or h["baseline"] not in models or h["model"] == h["baseline"]:
            raise ConfigError(f"{where}: hypotheses[{i}]: model and baseline must be two "
                              f"different names from models, got {h['model']!r}, {h['baseline']!r}")
        if h["contrast"] not in CONTRASTS:
            raise ConfigError(f"{where}: hypotheses[{i}].contrast must be one of "
                              f"{', '.join(CONTRASTS)}, got {h['contrast']!r}")
        if h["direction"] not in compare.DIRECTIONS:
            raise ConfigError(f"{where}: hypotheses[{i}].direction must be one of "
                              f"{', '.join(compare.DIRECTIONS)}, got {h['direction']!r}")
        if h["metric"] not in METRICS:
            raise ConfigError(f"{where}: hypotheses[{i}].metric must be one of "
                              f"{', '.join(METRICS)}, got {h['metric']!r}")
        if h["contrast"] == "did" and h["metric"] in ("causal_fve", "causal_corr"):
            raise ConfigError(f"{where}: hypotheses[{i}]: {h['metric']} is not defined for "
                              f"controls (their true change is 0); use contrast surround")
    if len({h["id"] for h in hyps}) != len(hyps):
        raise ConfigError(f"{where}: hypotheses: ids must be distinct")
    st = exp["statistics"]
    a = st["alpha"]
    if not _number(a) or not 0 < a < 1:
        raise ConfigError(f"{where}: statistics.alpha must be in (0, 1), got {a!r}")
    if st["correction"] != "holm":
        raise ConfigError(f"{where}: statistics.correction must be holm, got {st['correction']!r}")
    if st["wilcoxon_zero_method"] != compare.WILCOXON_ZERO_METHOD:
        raise ConfigError(f"{where}: statistics.wilcoxon_zero_method must be "
                          f"{compare.WILCOXON_ZERO_METHOD} (tfsacnn.compare's), "
                          f"got {st['wilcoxon_zero_method']!r}")
    if not _int(st["bootstrap_resamples"], 100):
        raise ConfigError(f"{where}: statistics.bootstrap_resamples must be an integer >= 100")
    c = exp["causal"]
    if not _int(c["triples"], 2) or not _int(c["seed"], 0):
        raise ConfigError(f"{where}: causal.triples must be an integer >= 2 and causal.seed >= 0")
    if not _number(c["seam_px"]) or c["seam_px"] < 0:
        raise ConfigError(f"{where}: causal.seam_px must be a number >= 0, got {c['seam_px']!r}")
    if not _number(c["centre_fraction"]) or not 0 < c["centre_fraction"] <= 1:
        raise ConfigError(f"{where}: causal.centre_fraction must be in (0, 1], "
                          f"got {c['centre_fraction']!r}")
    if not isinstance(exp["sample_size"], dict):
        raise ConfigError(f"{where}: sample_size must be a mapping")
    ev = exp["eval"]
    if ev.get("report_splits") != ["val"]:
        raise ConfigError(f"{where}: eval.report_splits must be [val]: the test split is sealed "
                          f"until --final, got {ev.get('report_splits')!r}")
    if ev.get("selection_split", "val") != "val":
        raise ConfigError(f"{where}: eval.selection_split must be val: the test split is sealed "
                          f"until --final")


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


def config_sha256(exp):
    """sha256 of the resolved experiment (without `out`, which only says where it runs)."""
    body = {k: v for k, v in exp.items() if k != "out"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def code_commit():
    """The code's commit: env TFSACNN_COMMIT, else `git rev-parse HEAD` of this checkout
    (with "-dirty" when tracked files have uncommitted changes), else "unknown"."""
    env = os.environ.get("TFSACNN_COMMIT")
    if env:
        return env
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=pathlib.Path(__file__).parent,
                           capture_output=True, text=True, timeout=10)
        if r.returncode == 0 and r.stdout.strip():
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=pathlib.Path(__file__).parent, capture_output=True,
                                   text=True, timeout=10).stdout.strip()
            return r.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


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
    """[(name, surround_model, seed)] of every site, by surround model then seed."""
    return [(f"{sm}_seed{k}", sm, k) for sm in exp["sites"]["surround_models"]
            for k in exp["sites"]["seeds"][sm]]


def units(exp):
    """[(name, surround_model, seed)] in the pre-registered unit_order."""
    by_name = {n: (n, sm, k) for n, sm, k in site_names(exp)}
    return [by_name[n] for n in exp["unit_order"]]


def unit_neuron_images(exp):
    """Training neuron-images of one unit (every model)."""
    s = exp["sites"]
    return sum(s["neurons"] * s["train"] * fit_config(exp, m)["train"]["epochs"]
               for m in exp["models"])


def plan(exp, rate=CPU_RATE):
    """The study's size: training neuron-images (neurons x train images x epochs, summed
    over units and models) and the hours they take at `rate` neuron-images/s."""
    s = exp["sites"]
    epochs = {m: fit_config(exp, m)["train"]["epochs"] for m in exp["models"]}
    n_units = len(site_names(exp))
    n_sur = round(s["surround_fraction"] * s["neurons"])
    total = n_units * unit_neuron_images(exp)
    return {"units": n_units, "unit_order": exp["unit_order"], "neurons_per_site": s["neurons"],
            "neurons_per_surround_model": {
                sm: {"surround": len(s["seeds"][sm]) * n_sur,
                     "control": len(s["seeds"][sm]) * (s["neurons"] - n_sur)}
                for sm in s["surround_models"]},
            "models": exp["models"], "epochs": epochs, "train_neuron_images": total,
            "rate_neuron_images_per_s": rate, "training_hours": round(total / rate / 3600, 2),
            "unit_seconds_estimate": round(unit_neuron_images(exp) / rate + UNIT_OVERHEAD_S)}


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
def split_images(site, split):
    """(N, S, S, 1) float32 images of one split of `site`; the responses are dropped as read."""
    from tfsacnn import data as data_lib

    return data_lib.load_numpy(site, split, verify=False)[0]


def images_sha256(images):
    """sha256 of an image array's bytes (which images the predictions were made on)."""
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(images, np.float32).tobytes()).hexdigest()


def causal_design(exp, images, params):
    """The causal stimuli on `images` (analyze.triple_design with the experiment's `causal`
    settings): -> (weights (n, S, S), triples: list of n (triples, 3))."""
    from tfsacnn.evaluation import analyze

    c = exp["causal"]
    return analyze.triple_design(images, params, c["triples"], seed=c["seed"],
                                 seam=float(c["seam_px"]), fraction=float(c["centre_fraction"]))


def predict_unit(exp, site, runs, split):
    """Every model's predictions on one split, from its images and the simulator's params
    only (no response is used): {model: {"images": (N, n) float32 predictions on the
    split's images, "triples": (2, triples, n) float32 R(a|b), R(a|c) of each neuron's
    causal stimuli (analyze.triple_responses)}}. runs: {model: run dir}."""
    import keras
    import numpy as np

    from data_prep import v1_model
    from tfsacnn.evaluation import analyze

    images = split_images(site, split)
    weights, triples = causal_design(exp, images, v1_model.load_params(site / "ground_truth.npz"))
    out = {}
    for name, run in runs.items():
        predict = analyze.model_predictor(analyze.load_run(run)["model"])
        out[name] = {"images": np.asarray(predict(images), np.float32),
                     "triples": analyze.triple_responses(predict, images, weights,
                                                         triples).astype(np.float32)}
        keras.backend.clear_session()
    return out


def score_predictions(exp, site, sm, seed, preds, split):
    """Per-neuron rows of one unit on `split` from the models' predictions (`predict_unit`'s
    dict): CORR, PT_S, PT_J against the split's responses, and the causal triple test
    (analyze.causal_scores of R(a|b) - R(a|c) against the truth's, scale = the s.d. of
    the predictions on the split's images).

    -> list of dicts (unit, surround_model, seed, neuron, has_surround, noise_ceiling,
    model, and METRICS; NaN only for causal_fve/causal_corr of controls, whose true change
    is 0). TfsacnnError when a prediction's shape does not fit the split."""
    import numpy as np

    from data_prep import v1_model
    from tfsacnn import data as data_lib
    from tfsacnn.evaluation import analyze
    from tfsacnn.evaluation import metrics as metrics_lib

    gt = site / "ground_truth.npz"
    with np.load(gt, allow_pickle=False) as z:
        ceiling = z["noise_ceiling" if split == "val" else f"noise_ceiling_{split}"].astype(float)
    params = v1_model.load_params(gt)
    images, y, reps = data_lib.load_numpy(site, split, verify=False, with_repeats=True)
    weights, triples = causal_design(exp, images, params)
    truth = analyze.triple_changes(lambda x: v1_model.responses(x[..., 0], params), images,
                                   weights, triples)
    top_k = fit_config(exp, exp["models"][0])["eval"]["top_k"]
    rows = []
    for name, p in preds.items():
        pred = np.asarray(p["images"], np.float64)
        resp = np.asarray(p["triples"], np.float64)
        if pred.shape != y.shape or resp.shape != (2,) + truth.shape:
            raise TfsacnnError(f"{site}: the {split} predictions of {name} have shapes "
                               f"{pred.shape}, {resp.shape}; the split needs {y.shape}, "
                               f"{(2,) + truth.shape}")
        scores = metrics_lib.evaluate(y, pred, top_k=top_k, repeats=reps)
        res = analyze.causal_scores(resp[0] - resp[1], truth, pred.std(0))
        for n in range(y.shape[1]):
            rows.append({"unit": site.name, "surround_model": sm, "seed": seed, "neuron": n,
                         "has_surround": bool(params["has_surround"][n]),
                         "noise_ceiling": float(ceiling[n]), "model": name,
                         **{m: float(scores[m][n]) for m in ("corr", "pt_s", "pt_j")},
                         "causal_fve": float(res["fve"][n]), "causal_corr": float(res["corr"][n]),
                         "false_surround": float(res["change_rms"][n])})
    return rows


def score_unit(exp, site, sm, seed, runs, split):
    """`score_predictions` of the trained runs' predictions ({model: run dir}) on `split`."""
    return score_predictions(exp, site, sm, seed, predict_unit(exp, site, runs, split), split)


def sealed_path(results, name):
    return pathlib.Path(results) / f"{name}.sealed.npz"


def write_sealed(path, name, commit, config_hash, test_sha256, preds):
    """RESULTSDIR/<unit>.sealed.npz: the models' test predictions (`predict_unit`), the
    unit, commit, config hash and the sha256 of the test images they were made on."""
    import numpy as np

    from tfsacnn.files import temporary

    arrays = {"unit": np.str_(name), "commit": np.str_(commit),
              "config_sha256": np.str_(config_hash), "test_images_sha256": np.str_(test_sha256)}
    for m, p in preds.items():
        arrays[f"{m}.images"] = np.asarray(p["images"], np.float32)
        arrays[f"{m}.triples"] = np.asarray(p["triples"], np.float32)
    path = pathlib.Path(path)
    with temporary(path, ".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)


def read_sealed(path, exp, name, rec):
    """(`predict_unit`'s dict, test images sha256) from a sealed file; ConfigError when it
    is missing, unreadable, or of another unit, model set, commit or config than `rec`."""
    import numpy as np

    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: missing: unit {name} has no sealed test predictions "
                          f"(written when the unit finished)")
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a sealed predictions file ({e})") from None
    want = {"unit": name, "commit": rec.get("commit"), "config_sha256": rec.get("config_sha256")}
    keys = set(want) | {"test_images_sha256"} | {f"{m}.{k}" for m in exp["models"]
                                                  for k in ("images", "triples")}
    if set(a) != keys or any(str(a[k]) != str(v) for k, v in want.items()):
        raise ConfigError(f"{path}: not the sealed predictions of unit {name} with models "
                          f"{', '.join(exp['models'])} and the commit/config of {name}.json")
    return ({m: {k: a[f"{m}.{k}"] for k in ("images", "triples")} for m in exp["models"]},
            str(a["test_images_sha256"]))


# --------------------------------------------------------------------------- statistics
def _values(df, sm, group, model, metric):
    """(unit, neuron)-indexed values of one model: a pandas Series."""
    sel = df[(df["surround_model"] == sm) & (df["model"] == model)
             & (df["has_surround"] == (group == "surround"))]
    return sel.set_index(["unit", "neuron"])[metric].astype(float) * SCALE.get(metric, 1.0)


def _pair(df, sm, group, model, baseline, metric):
    a = _values(df, sm, group, model, metric)
    b = _values(df, sm, group, baseline, metric).reindex(a.index)
    return a.to_numpy(float), b.to_numpy(float)


def hypothesis_test(df, sm, h, resamples):
    """One confirmatory test: `did` (surround neurons' paired differences against the
    controls', one-sided rank-sum) or `surround` (paired, one-sided signed-rank)."""
    from tfsacnn.evaluation import compare

    a, b = _pair(df, sm, "surround", h["model"], h["baseline"], h["metric"])
    if h["contrast"] == "surround":
        return compare.directional_paired(a, b, h["direction"], resamples)
    ca, cb = _pair(df, sm, "control", h["model"], h["baseline"], h["metric"])
    return compare.directional_two_sample(a - b, ca - cb, h["direction"], resamples)


def statistics(exp, df):
    """The pre-registered family: one entry per hypothesis x surround model, Holm-corrected
    one-sided p; `holds` from compare.directional_verdict."""
    from tfsacnn.evaluation import compare

    st = exp["statistics"]
    tests = []
    for sm in exp["sites"]["surround_models"]:
        for h in exp["hypotheses"]:
            r = hypothesis_test(df, sm, h, st["bootstrap_resamples"])
            tests.append({**h, "surround_model": sm, **r})
    adj = compare.holm([t["p"] for t in tests])
    for t, p in zip(tests, adj):
        t["p_holm"] = None if math.isnan(p) else float(p)
        t["holds"] = compare.directional_verdict(t["estimate"], t["p_holm"], st["alpha"],
                                                 t["direction"])
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
    group, two-sided, uncorrected."""
    from tfsacnn.evaluation import compare

    pairs = list(dict.fromkeys((h["model"], h["baseline"]) for h in exp["hypotheses"]))
    return [{"surround_model": sm, "group": g, "model": a, "baseline": b, "metric": m,
             **compare.paired(*_pair(df, sm, g, a, b, m))}
            for sm in exp["sites"]["surround_models"] for g in GROUPS for a, b in pairs
            for m in METRICS]


def pilot_sd(exp, df):
    """Per-neuron s.d. of each hypothesis' paired differences on a set of unit records:
    {surround_model: {hypothesis id: {"sd_surround", "sd_control", "mean_surround",
    "mean_control", "n_surround", "n_control"}}} (what power.py reads)."""
    import numpy as np

    out = {}
    for sm in exp["sites"]["surround_models"]:
        out[sm] = {}
        for h in exp["hypotheses"]:
            e = {}
            for g in GROUPS:
                a, b = _pair(df, sm, g, h["model"], h["baseline"], h["metric"])
                d = (a - b)[~np.isnan(a - b)]
                e[f"n_{g}"] = int(len(d))
                e[f"mean_{g}"] = float(d.mean()) if len(d) else None
                e[f"sd_{g}"] = float(d.std(ddof=1)) if len(d) > 1 else None
            out[sm][h["id"]] = e
    return out


# --------------------------------------------------------------------------- report
def _f(x, fmt):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _digits(metric):
    return "+.1f" if metric in SCALE else "+.3f"


def markdown(exp, tests, desc, explore, mixed, sd=None):
    from tfsacnn.evaluation import compare

    s = exp["sites"]
    st = exp["statistics"]
    lines = [f"Pre-registered: {exp['preregistered'] or '(not stated)'}.", ""]
    if mixed:
        lines += [f"**Mixed code (--allow-mixed-code):** {mixed}", ""]
    lines += [
        (f"Units: {', '.join(exp['unit_order'])}; each {s['neurons']} neurons (surround "
         f"fraction {s['surround_fraction']}), {s['train']} train / {s['val']} val / "
         f"{s['test']} test images, {s['repeats']} repeats. Models: {', '.join(exp['models'])}; "
         f"training: {', '.join(f'{k}={v}' for k, v in exp['train'].items()) or 'defaults'}; "
         f"best epoch per neuron on val. Reported split: **test** (sealed until this step)."),
        "",
        "### Confirmatory hypotheses",
        "",
        (f"did: the surround neurons' paired difference (model - baseline) against the "
         f"controls', one-sided Wilcoxon rank-sum, estimate = two-sample Hodges-Lehmann shift. "
         f"surround: paired over the surround neurons, one-sided Wilcoxon signed-rank "
         f"(zero_method=\"{st['wilcoxon_zero_method']}\"), estimate = Hodges-Lehmann. "
         f"Bootstrap 95 % intervals ({st['bootstrap_resamples']} resamples of neurons), Holm "
         f"over all {len(tests)} tests. Holds: Holm p < {st['alpha']} and the estimate in the "
         f"registered direction. n missing: neurons with no value (never dropped silently)."),
        "",
        "| id | surround model | hypothesis | estimate [95% CI] | mean Δ | n | n missing | p | Holm p | holds |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for t in tests:
        d = _digits(t["metric"])
        n = f"{t['n_x']}+{t['n_y']}" if "n_x" in t else str(t["n_paired"])
        lines.append(
            f"| {t['id']} | {t['surround_model']} | {t['model']} {'>' if t['direction'] == 'greater' else '<'} "
            f"{t['baseline']}, {t['metric']}, {t['contrast']} | {_f(t['estimate'], d)} "
            f"[{_f(t['ci_low'], d)}, {_f(t['ci_high'], d)}] | {_f(t['mean_diff'], d)} | {n} | "
            f"{t['n_missing']} | {compare.format_p(t['p'])} | "
            f"{compare.format_p(t['p_holm'] if t['p_holm'] is not None else math.nan)} | "
            f"{'yes' if t['holds'] else 'no'} |")
    if sd:
        lines += ["", ("Per-neuron s.d. of each hypothesis' paired difference here, beside the "
                       "pilot's that sized the study (`sample_size`):"), "",
                  "| surround model | hypothesis | s.d. surround (n) | s.d. control (n) |",
                  "|---|---|---|---|"]
        for sm, per in sd.items():
            for hid, e in per.items():
                lines.append(f"| {sm} | {hid} | {_f(e['sd_surround'], '.3f')} ({e['n_surround']}) "
                             f"| {_f(e['sd_control'], '.3f')} ({e['n_control']}) |")
        pilot = exp["sample_size"].get("pilot_sd")
        if pilot:
            lines += ["", f"Pilot s.d.: {json.dumps(pilot)}."]
    lines += ["", "### Exploratory (not pre-registered; no correction)", "",
              ("Means ± s.e.m. over neurons pooled across units. causal_fve / causal_corr: the "
               "triple test R(a|b) - R(a|c) against the truth's (surround neurons; undefined "
               "for controls). false_surround: r.m.s. predicted change / response s.d. NC: "
               "noise ceiling."), "",
              "| surround model | group | model | n | CORR | PT_S % | PT_J % | causal FVE | causal corr | false surround | NC |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in desc:
        cells = [r["surround_model"], r["group"], r["model"], str(r["n"])]
        for m in METRICS + ("noise_ceiling",):
            d = ".1f" if m in SCALE else ".3f"
            cells.append(f"{_f(r[m], d)} ± {_f(r[f'{m}_sem'], d)}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Paired differences on every metric (two-sided, uncorrected):", "",
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


# --------------------------------------------------------------------------- units
def unit_record_path(results, name):
    return pathlib.Path(results) / f"{name}.json"


def read_records(exp, results):
    """{unit: record} of the finished units in RESULTSDIR (ConfigError on a bad file)."""
    out = {}
    for name, _, _ in units(exp):
        path = unit_record_path(results, name)
        if path.is_file():
            try:
                rec = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"{path}: not a unit record ({e})") from None
            if not isinstance(rec, dict) or rec.get("unit") != name or "rows" not in rec:
                raise ConfigError(f"{path}: not a unit record of {name}")
            out[name] = rec
    return out


def run_unit(exp, out, results, name, sm, seed, log):
    """Synthesize, train every model (val only), score val, write the models' sealed test
    predictions RESULTSDIR/<unit>.sealed.npz, then RESULTSDIR/<unit>.json."""
    t0 = time.perf_counter()
    site = out / "sites" / name
    seconds = {"site": round(make_site(exp, site, sm, seed, log), 1)}
    runs = {}
    for m in exp["models"]:
        runs[m] = out / "runs" / name / m
        seconds[m] = round(train_model(exp, m, site, runs[m], log), 1)
    t = time.perf_counter()
    rows = score_unit(exp, site, sm, seed, runs, "val")
    seconds["score_val"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    commit, config_hash = code_commit(), config_sha256(exp)
    path = unit_record_path(results, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_sealed(sealed_path(results, name), name, commit, config_hash,
                 images_sha256(split_images(site, "test")), predict_unit(exp, site, runs, "test"))
    seconds["predict_test"] = round(time.perf_counter() - t, 1)
    seconds["total"] = round(time.perf_counter() - t0, 1)
    rec = _clean({"unit": name, "surround_model": sm, "seed": seed, "split": "val",
                  "commit": commit, "config_sha256": config_hash,
                  "preregistered": exp["preregistered"], "seconds": seconds, "rows": rows})
    write_text(path, json.dumps(rec, indent=1))
    log(f"unit {name}: done in {seconds['total']} s -> {path}")
    return seconds["total"]


def run_units(exp, out, results, time_limit, rate, log):
    """Run the unfinished units in unit_order until the next would not fit in time_limit.
    -> {"done": [...], "skipped": [...], "left": [...]}."""
    t_start = time.perf_counter()
    have = read_records(exp, results)
    done, left, last = [], [], None
    for name, sm, seed in units(exp):
        if name in have:
            continue
        if left:
            left.append(name)
            continue
        estimate = last if last is not None else unit_neuron_images(exp) / rate + UNIT_OVERHEAD_S
        elapsed = time.perf_counter() - t_start
        if time_limit is not None and elapsed + estimate > time_limit:
            log(f"unit {name}: not started ({elapsed:.0f} s used, ~{estimate:.0f} s needed, "
                f"limit {time_limit:.0f} s)")
            left.append(name)
            continue
        last = run_unit(exp, out, results, name, sm, seed, log)
        done.append(name)
    return {"done": done, "skipped": sorted(have), "left": left}


def final(exp, out, results, allow_mixed, log):
    """The sealed step: test scores of every unit at once, the confirmatory tests, the report."""
    import pandas as pd

    final_dir = pathlib.Path(results) / "final"
    if (final_dir / "summary.json").is_file():
        raise TfsacnnError(f"{final_dir / 'summary.json'}: the final analysis has run (the test "
                           f"split is read once); refusing to run it again")
    recs = read_records(exp, results)
    missing = [n for n, _, _ in units(exp) if n not in recs]
    if missing:
        raise TfsacnnError(f"{results}: {len(missing)} unit(s) unfinished ({', '.join(missing)}); "
                           f"the sealed test split is read only when every unit is done")
    want = (code_commit(), config_sha256(exp))
    other = sorted({f"{n}: commit {r.get('commit')}, config {str(r.get('config_sha256'))[:12]}"
                    for n, r in recs.items() if (r.get("commit"), r.get("config_sha256")) != want})
    mixed = ""
    if other:
        msg = (f"{len(other)} unit(s) trained under another commit/config than this one "
               f"(commit {want[0]}, config {want[1][:12]}): {'; '.join(other)}")
        if not allow_mixed:
            raise TfsacnnError(f"{results}: {msg}; use --allow-mixed-code to analyse them anyway")
        mixed = msg
    sealed = {n: read_sealed(sealed_path(results, n), exp, n, recs[n]) for n, _, _ in units(exp)}
    rows = []
    for name, sm, seed in units(exp):
        site = out / "sites" / name
        make_site(exp, site, sm, seed, log)       # regenerated from its seed when not here
        preds, sha = sealed[name]
        if images_sha256(split_images(site, "test")) != sha:
            raise TfsacnnError(f"{site}: its test images are not those unit {name}'s "
                               f"predictions were sealed on")
        log(f"unit {name}: scoring the test split")
        rows += score_predictions(exp, site, sm, seed, preds, "test")
    df = pd.DataFrame(rows)
    tests = statistics(exp, df)
    desc = descriptive(exp, df)
    explore = exploratory_pairs(exp, df)
    sd = pilot_sd(exp, df)
    md = markdown(exp, tests, desc, explore, mixed, sd)
    summary = _clean({"experiment": exp, "split": "test", "commit": want[0],
                      "config_sha256": want[1], "mixed_code": mixed or None,
                      "hypotheses": tests, "sd": sd,
                      "exploratory": {"descriptive": desc, "paired": explore}})
    final_dir.mkdir(parents=True, exist_ok=True)
    write_text(final_dir / "neurons.csv", df.to_csv(index=False))
    write_text(final_dir / "table.md", md)
    write_text(final_dir / "summary.json", json.dumps(summary, indent=1))
    print(md, end="")
    log(f"wrote {final_dir}/table.md, neurons.csv and summary.json")
    return summary


# --------------------------------------------------------------------------- CLI
def build_parser():
    p = OneLineParser(prog="python -m studies.sa_vs_cnn.experiment", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", help="experiment YAML, e.g. studies/sa_vs_cnn/sa_vs_cnn_gpu.yaml")
    p.add_argument("--out", help="work directory: sites and trained runs (overrides `out`)")
    p.add_argument("--results", help="directory of the per-unit result files (committed); "
                                      "required unless --plan")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, value parsed as YAML, e.g. sites.neurons=3 (repeatable; "
                        "changes the config hash)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a work directory that holds a different experiment")
    p.add_argument("--time-limit-s", type=float, default=None,
                   help="do not start a unit that would end after this many seconds of this call")
    p.add_argument("--plan", action="store_true",
                   help="print the study's size (neuron-images, hours at --rate) and run nothing")
    p.add_argument("--rate", type=float, default=CPU_RATE,
                   help=f"training neuron-images/s for --plan and the first unit's time estimate "
                        f"(default {CPU_RATE}: 2 CPU cores)")
    p.add_argument("--final", action="store_true",
                   help="the sealed step: score test for every unit, run the confirmatory tests")
    p.add_argument("--allow-mixed-code", action="store_true",
                   help="with --final: accept units trained under another commit/config "
                        "(said in the report)")
    return p


def run(args):
    t_all = time.perf_counter()

    def log(msg):
        print(f"[experiment {time.perf_counter() - t_all:7.1f}s] {msg}", flush=True)

    if args.time_limit_s is not None and not args.time_limit_s > 0:
        raise ConfigError(f"--time-limit-s: must be > 0, got {args.time_limit_s}")
    if not args.rate > 0:
        raise ConfigError(f"--rate: must be > 0, got {args.rate}")
    if args.allow_mixed_code and not args.final:
        raise ConfigError("--allow-mixed-code: only with --final")
    exp = load(args.experiment, args.set, args.out)
    if args.plan:
        print(json.dumps(plan(exp, args.rate), indent=1))
        return None
    if not args.results:
        raise ConfigError("--results: required (the directory of the per-unit result files)")
    results = pathlib.Path(args.results)
    if results.exists() and not results.is_dir():
        raise ConfigError(f"--results: {results} is a file, not a directory")
    if args.final:
        out = pathlib.Path(exp["out"])
        return final(exp, out, results, args.allow_mixed_code, log)
    out = prepare_out(exp, args.overwrite, log)
    status = run_units(exp, out, results, args.time_limit_s, args.rate, log)
    log(f"{len(status['done'])} unit(s) done this call, {len(status['skipped'])} already done, "
        f"{len(status['left'])} left: {', '.join(status['left']) or 'none'}")
    return status


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args), path=args.out)


if __name__ == "__main__":
    sys.exit(main())
