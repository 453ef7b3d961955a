"""Calibration of the simulator's surround models against the real response statistics (no model training).

    python studies/sa_vs_cnn/calibrate_gated.py [--neurons 32] [--train 5000] [--seed 0] [--pairs 300]

For each surround model (fixed, gated) it simulates the default site in memory
(data_prep.synthesize.generate_site) and prints one JSON object: per statistic of the val
targets (data_prep.synthesize.response_statistics), [median, min, max] over neurons and
whether the median is in the real sample's range (REAL_RANGES); the noise ceiling; the
CRF-only correlation of the surround neurons; for gated, quantiles of the gate q over the
surround neurons and val images; and the noise-free truth's r.m.s. change under the causal
surround swap (tfsacnn.evaluation.analyze.causal_surround), relative to its response s.d.
The gate's constants (data_prep.v1_model.GATE_OFFSET, GATE_WIDTH) are not fitted here:
this only checks that the output calibration keeps the statistics real-like.
"""
import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from data_prep import v1_model  # noqa: E402
from data_prep.synthesize import REAL_RANGES, generate_site, response_statistics  # noqa: E402
from tfsacnn.evaluation import analyze  # noqa: E402


def spread(x, nd=3):
    """[median, min, max] of x (NaN ignored), rounded."""
    return [round(float(f(x)), nd) for f in (np.nanmedian, np.nanmin, np.nanmax)]


def calibrate(surround_model, neurons, train, seed, pairs):
    s = generate_site(neurons=neurons, train=train, val=1000, seed=seed, surround_model=surround_model)
    has = s["params"]["has_surround"]
    stats = response_statistics(s["splits"]["val"]["responses"])
    row = {k: spread(v, 4) for k, v in stats.items()}
    row["median_in_real_range"] = {k: bool(lo <= np.nanmedian(stats[k]) <= hi)
                                   for k, (lo, hi) in REAL_RANGES.items()}
    row["noise_ceiling"] = spread(s["noise_ceiling"]["val"])
    row["crf_only_corr_surround"] = spread(s["crf_only_corr"][has])
    if surround_model == "gated":
        row["gate_quantiles_5_25_50_75_95"] = [
            round(float(q), 3) for q in np.quantile(s["gate"]["val"][:, has], [.05, .25, .5, .75, .95])]
    p = s["params"]
    res = analyze.causal_surround(lambda x: v1_model.responses(x[..., 0], p),
                                  s["splits"]["val"]["images"][..., None], p, n_pairs=pairs)
    row["truth_swap_change_rms_over_sd_surround"] = spread(res["change_rms"][has])
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, default=32)
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pairs", type=int, default=300)
    a = ap.parse_args()
    out = {"gate": {"offset": v1_model.GATE_OFFSET, "width": v1_model.GATE_WIDTH},
           "real_ranges": REAL_RANGES}
    for sm in v1_model.SURROUND_MODELS:
        out[sm] = calibrate(sm, a.neurons, a.train, a.seed, a.pairs)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
