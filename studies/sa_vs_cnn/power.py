"""Size the SA-vs-CNN study from its pilot: power of the confirmatory tests per design.

    python -m studies.sa_vs_cnn.power studies/sa_vs_cnn/sa_vs_cnn.yaml \\
        --results studies/sa_vs_cnn/results/pilot [--effect H1=0.024 --effect H2=0.10]
        [--sites 2 3 4 6 8] [--neurons 12] [--fractions 0.5 0.75] [--draws 500]

Reads the pilot's unit records (val scores only), takes the per-neuron s.d. of each
hypothesis' paired differences (surround neurons and controls, pooled over surround
models: the larger of the two), and for each design (sites per surround model x
neurons per site x surround fraction) gives the power of each hypothesis at the
effect of interest, at alpha / m (m = the family size: Holm's first step, conservative):

  analytic   normal approximation with the Wilcoxon tests' asymptotic relative
             efficiency 3/pi: did (rank-sum) Phi(d / (s sqrt(1/n_s + 1/n_c)) sqrt(3/pi) - z),
             surround (signed-rank) Phi(d / s sqrt(n_s) sqrt(3/pi) - z)
  simulated  the study's own tests (tfsacnn.compare.directional_*) on normal draws with
             the pilot's s.d. and the effect, `--draws` times

Prints one JSON object: the s.d., the effects, and a row per design.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from tfsacnn.errors import ConfigError, OneLineParser, run_cli

DEFAULT_EFFECTS = {"H1": 0.024, "H2": 0.10}   # the paper's CORR gain; 10 % of the true change's variance


def pilot_sd(exp, results):
    """{hypothesis id: {"sd_surround", "sd_control", "mean_surround", "mean_control",
    "n_surround", "n_control"}} pooled over surround models (the larger s.d.)."""
    import pandas as pd

    from studies.sa_vs_cnn import experiment

    recs = experiment.read_records(exp, results)
    if not recs:
        raise ConfigError(f"--results: no unit records in {results}")
    df = pd.DataFrame([r for rec in recs.values() for r in rec["rows"]])
    for m in experiment.METRICS:
        df[m] = pd.to_numeric(df[m], errors="coerce")
    per = experiment.pilot_sd(exp, df)
    out = {}
    for h in exp["hypotheses"]:
        e = {}
        for g in ("surround", "control"):
            sds = [per[sm][h["id"]][f"sd_{g}"] for sm in per if per[sm][h["id"]][f"sd_{g}"] is not None]
            e[f"sd_{g}"] = max(sds) if sds else None
            e[f"mean_{g}"] = {sm: per[sm][h["id"]][f"mean_{g}"] for sm in per}
            e[f"n_{g}"] = sum(per[sm][h["id"]][f"n_{g}"] for sm in per)
        out[h["id"]] = e
    return out, sorted(recs)


def _z(q):
    from scipy import stats

    return float(stats.norm.ppf(q))


def analytic_power(contrast, effect, sd_s, sd_c, n_s, n_c, alpha):
    """One-sided power at level alpha (normal approximation, ARE 3/pi)."""
    from scipy import stats

    are = math.sqrt(3 / math.pi)
    if contrast == "did":
        se = math.sqrt(sd_s ** 2 / n_s + sd_c ** 2 / n_c)
    else:
        se = sd_s / math.sqrt(n_s)
    return float(stats.norm.cdf(effect / se * are - _z(1 - alpha)))


def simulated_power(contrast, effect, sd_s, sd_c, n_s, n_c, alpha, draws, seed=0):
    """Fraction of `draws` normal data sets where the study's one-sided test has p < alpha."""
    from tfsacnn.evaluation import compare

    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(draws):
        s = rng.normal(effect, sd_s, n_s)
        if contrast == "did":
            p = compare.directional_two_sample(s, rng.normal(0.0, sd_c, n_c), resamples=100)["p"]
        else:
            p = compare.directional_paired(s, np.zeros(n_s), resamples=100)["p"]
        hits += p < alpha
    return hits / draws


def power_table(exp, sd, effects, sites, neurons, fractions, draws):
    m = len(exp["hypotheses"]) * len(exp["sites"]["surround_models"])
    alpha = exp["statistics"]["alpha"] / m
    rows = []
    for k in sites:
        for f in fractions:
            n_s = k * round(f * neurons)
            n_c = k * neurons - n_s
            row = {"sites_per_surround_model": k, "neurons_per_site": neurons,
                   "surround_fraction": f, "n_surround": n_s, "n_control": n_c}
            for h in exp["hypotheses"]:
                e = sd[h["id"]]
                sd_s, sd_c = e["sd_surround"], e["sd_control"] or e["sd_surround"]
                args = (h["contrast"], effects[h["id"]], sd_s, sd_c, n_s, n_c, alpha)
                row[f"{h['id']}_analytic"] = round(analytic_power(*args), 3)
                if draws:
                    row[f"{h['id']}_simulated"] = round(simulated_power(*args, draws), 3)
            rows.append(row)
    return {"alpha_per_test": alpha, "family_size": m, "rows": rows}


def _effect(text):
    k, _, v = text.partition("=")
    try:
        return k, float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ID=NUMBER, got {text!r}") from None


def main(argv=None):
    p = OneLineParser(prog="python -m studies.sa_vs_cnn.power", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", help="the pilot's experiment YAML")
    p.add_argument("--results", required=True, help="the pilot's unit records")
    p.add_argument("--effect", type=_effect, action="append", default=[],
                   help="effect of interest per hypothesis id, e.g. H1=0.024 (repeatable)")
    p.add_argument("--sites", type=int, nargs="+", default=[2, 3, 4, 6, 8])
    p.add_argument("--neurons", type=int, default=12)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.75])
    p.add_argument("--draws", type=int, default=300)
    args = p.parse_args(argv)

    def run():
        from studies.sa_vs_cnn import experiment

        exp = experiment.load(args.experiment)
        effects = {**DEFAULT_EFFECTS, **dict(args.effect)}
        missing = [h["id"] for h in exp["hypotheses"] if h["id"] not in effects]
        if missing:
            raise ConfigError(f"--effect: no effect of interest for {', '.join(missing)}")
        sd, units = pilot_sd(exp, args.results)
        for h in exp["hypotheses"]:
            if sd[h["id"]]["sd_surround"] is None:
                raise ConfigError(f"--results: too few neurons for the s.d. of {h['id']}")
        out = {"pilot_units": units, "sd": sd, "effects": effects,
               **power_table(exp, sd, effects, args.sites, args.neurons, args.fractions, args.draws)}
        print(json.dumps(out, indent=1))

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
