"""PT on a larger held-out set from the same simulated neurons (studies/sa_vs_cnn/README.md, section 7).

    python studies/sa_vs_cnn/pt_power.py SITE_DIR BASELINE_RUN RUN [--images 10000] [--seed 12345]

PT with top_k = 10 of a 1000-image test split is coarse: even the noise-free truth of a
surround neuron reaches only ~70% PT_J there. This draws `--images` new images
(`data_prep.stimuli`, a seed the site never used), gives them the site's own neurons
(SITE_DIR/ground_truth.npz: the calibrated parameters, so no re-calibration) and 10 noisy
repeats, predicts them with both runs' model.keras and prints one JSON object: per group
(surround / control), CORR, PT_J and PT_S at top_k = 1% of the images, for the runs and
for the noise-free truth, and the paired run - baseline differences (neurons improved,
Wilcoxon p), and a two-sided Mann-Whitney p comparing the surround and control neurons'
differences (is the gain larger where the surround exists?). First it checks that the parameters reproduce the site's test split.

`--per-neuron`: also one row per neuron (key "neurons") with what the surround does to
that neuron's peaks, and per group a Spearman rho between the PT gain and each of those
(key "why_pt"): `peak_overlap_crf_only` is the fraction of the neuron's
top_k images (by noise-free response) that stay in the top_k without the surround
(`v1_model.responses(..., context=False)`; 1 = the surround does not change which images
are the peaks); `top_overlap_*` and `peak_height_*` are `metrics.top_overlap` (which images a model
puts at the top) and `metrics.peak_height` (how high it predicts them; PT needs predictions
that reach the true threshold), with a paired Wilcoxon of their change per group (key
"peaks").
"""
import argparse
import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from data_prep import stimuli, v1_model  # noqa: E402
from tfsacnn.evaluation import compare, metrics  # noqa: E402
from tfsacnn.evaluation.analyze import load_run  # noqa: E402


def scores(y, pred, top_k):
    return {"CORR": metrics.corr(y, pred),
            "PT_J": 100 * metrics.peak_tuning_joint(y, pred, top_k),
            "PT_S": 100 * metrics.peak_tuning_separate(y, pred, top_k),
            "top_overlap": metrics.top_overlap(y, pred, top_k),
            "peak_height": metrics.peak_height(y, pred, top_k)}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("site")
    p.add_argument("baseline")
    p.add_argument("run")
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--per-neuron", action="store_true")
    a = p.parse_args()
    site = pathlib.Path(a.site)
    params = v1_model.load_params(site / "ground_truth.npz")
    with np.load(site / "ground_truth.npz", allow_pickle=False) as z:
        test_clean = z["test_noise_free"]
    from tfsacnn import data as data_lib
    x_test, _ = data_lib.load_numpy(site, "test", verify=False)
    err = np.abs(v1_model.responses(x_test[..., 0], params) - test_clean).max()
    if err > 1e-4:
        raise SystemExit(f"{site}: ground_truth.npz does not reproduce the test split ({err:.2g})")

    rng = np.random.default_rng(a.seed)
    images = stimuli.natural_images(a.images, params.get("image_size", 50), rng)
    clean = v1_model.responses(images, params)
    target = v1_model.noisy_trials(clean, params, rng, a.repeats).mean(1)
    top_k = max(1, a.images // 100)
    has = params["has_surround"]
    preds = {}
    for key, run in (("baseline", a.baseline), ("run", a.run)):
        loaded = load_run(pathlib.Path(run))
        if list(loaded["neurons"]) != list(range(len(has))):
            raise SystemExit(f"{run}: holds neurons {loaded['neurons']}, not all {len(has)} of {site}")
        preds[key] = np.asarray(loaded["model"].predict(images[..., None], batch_size=250,
                                                        verbose=0), np.float64)
    out = {"images": a.images, "repeats": a.repeats, "top_k": top_k, "seed": a.seed,
           "check_max_abs_error_on_test_split": float(err)}
    deltas = {}
    for group, sel in (("surround", has), ("control", ~has)):
        s = {k: scores(target[:, sel], v[:, sel], top_k) for k, v in preds.items()}
        s["noise_free_truth"] = scores(target[:, sel], clean[:, sel], top_k)
        g = {k: {m: round(float(np.mean(v)), 4) for m, v in d.items()} for k, d in s.items()}
        for m in ("CORR", "PT_J", "PT_S"):
            d = s["run"][m] - s["baseline"][m]
            deltas[group, m] = d
            p_val = compare.paired(s["run"][m], s["baseline"][m])["p"]
            g[f"delta_{m}"] = {"mean": round(float(d.mean()), 4), "improved": int((d > 0).sum()),
                               "neurons": int(len(d)), "wilcoxon_p": round(float(p_val), 5)}
        out[group] = g
    out["surround_vs_control_mannwhitney_p"] = {
        m: round(float(stats.mannwhitneyu(deltas["surround", m], deltas["control", m]).pvalue), 5)
        for m in ("CORR", "PT_J", "PT_S")}
    if a.per_neuron:
        out.update(per_neuron(target, clean, v1_model.responses(images, params, context=False),
                              preds, params, top_k))
    print(json.dumps(out, indent=1))


def per_neuron(target, clean, crf_only, preds, params, top_k):
    """Rows per neuron, and Spearman rho per group of the PT gains with each column."""
    cols = {"peak_overlap_crf_only": metrics.top_overlap(clean, crf_only, top_k),
            "surround_strength": np.asarray(params["surround_strength"], float)}
    for key, p in preds.items():
        for m, v in scores(target, p, top_k).items():
            cols[f"{m}_{key}"] = v
    for m in ("CORR", "PT_J", "PT_S", "top_overlap", "peak_height"):
        cols[f"delta_{m}"] = cols[f"{m}_run"] - cols[f"{m}_baseline"]
    has = np.asarray(params["has_surround"], bool)
    rows = [{"neuron": j, "surround": bool(has[j]),
             **{k: round(float(v[j]), 4) for k, v in cols.items()}} for j in range(len(has))]
    why, peaks = {}, {}
    for group, sel in (("surround", has), ("control", ~has)):
        for m, f in (("top_overlap", metrics.top_overlap), ("peak_height", metrics.peak_height)):
            d = cols[f"delta_{m}"][sel]
            peaks[f"{group}: {m}"] = {
                **{k: round(float(cols[f"{m}_{k}"][sel].mean()), 4) for k in preds},
                "noise_free_truth": round(float(f(target, clean, top_k)[sel].mean()), 4),
                "crf_only_truth": round(float(f(target, crf_only, top_k)[sel].mean()), 4),
                "delta": round(float(d.mean()), 4), "improved": int((d > 0).sum()),
                "wilcoxon_p": round(compare.paired(cols[f"{m}_run"][sel], cols[f"{m}_baseline"][sel])["p"], 5)}
        for d in ("delta_PT_J", "delta_PT_S"):
            for k in ("peak_overlap_crf_only", "surround_strength", "delta_CORR", "delta_peak_height", "delta_top_overlap"):
                if np.ptp(cols[k][sel]) == 0 or np.isnan(cols[k][sel]).any():
                    continue                  # constant or undefined for the controls
                r = stats.spearmanr(cols[d][sel], cols[k][sel])
                why[f"{group}: {d} ~ {k}"] = {"rho": round(float(r.statistic), 3),
                                              "p": round(float(r.pvalue), 4)}
    return {"neurons": rows, "why_pt": why, "peaks": peaks}


if __name__ == "__main__":
    main()
