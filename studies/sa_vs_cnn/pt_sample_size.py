"""How many surround neurons would the issue's criterion need? (studies/sa_vs_cnn/README.md, section 8)

    python studies/sa_vs_cnn/pt_sample_size.py BASELINE_RUN RUN [BASELINE_RUN RUN ...] [--split test]
        [--n 24 36 48 72] [--draws 300] [--seed 0]

Reads each pair's per-neuron CORR, PT_S and PT_J on `--split` (metrics.json, as
`tfsacnn.compare` does) and its site's has_surround; pairs from several sites (e.g. site
seeds 0 and 1) are pooled, each neuron paired within its own site ("observed" is then the
pooled test). Then it draws, for each sample size n,
`--draws` sets of n surround neurons with replacement from the observed ones (their
(baseline, run) pairs kept together) and tests each set as the experiment does
(`compare.paired`: two-sided Wilcoxon over neurons). Prints one JSON object: per n, the
share of draws in which RUN beats BASELINE with p < 0.05 on each metric, on both PT
metrics, and on all three (the issue's criterion). A bootstrap from a dozen neurons is a
planning estimate: it assumes new neurons look like these. (With n <= 13 and tied PT
values, scipy's Wilcoxon takes a permutation test, about 1 s a draw: add 12 to `--n`
only with few `--draws`.)
"""
import argparse
import json

import numpy as np

from tfsacnn.evaluation import compare

METRICS = ("corr", "pt_s", "pt_j")


def power(base, run, sizes, draws, seed=0, alpha=0.05):
    """base, run: {metric: (m,) per-neuron values} -> {n: {metric | 'pt' | 'criterion': share}}.

    A draw succeeds on a metric when RUN's mean is higher and the paired p < alpha.
    """
    rng = np.random.default_rng(seed)
    m = len(base[METRICS[0]])
    out = {}
    for n in sizes:
        wins = {k: 0 for k in METRICS + ("pt", "criterion")}
        for _ in range(draws):
            idx = rng.integers(0, m, n)
            ok = {k: _wins(compare.paired(run[k][idx], base[k][idx]), alpha) for k in METRICS}
            for k in METRICS:
                wins[k] += ok[k]
            wins["pt"] += ok["pt_s"] and ok["pt_j"]
            wins["criterion"] += all(ok.values())
        out[n] = {k: round(v / draws, 3) for k, v in wins.items()}
    return out


def _wins(stat, alpha):
    return bool(stat["diff"] > 0 and stat["p"] < alpha)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="BASELINE_RUN RUN")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, nargs="+", default=[24, 36, 48, 72])
    p.add_argument("--draws", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if len(a.runs) % 2:
        p.error("give run directories in pairs: BASELINE_RUN RUN [BASELINE_RUN RUN ...]")
    base, run = {k: [] for k in METRICS}, {k: [] for k in METRICS}
    for i in range(0, len(a.runs), 2):
        pair = [compare.load_run(d, a.split) for d in a.runs[i:i + 2]]
        compare.align_runs(pair)                  # one site per pair
        sur = compare.surround_mask(pair)
        for k in METRICS:
            base[k].append(pair[0]["per_neuron"][k][sur])
            run[k].append(pair[1]["per_neuron"][k][sur])
    base, run = ({k: np.concatenate(v[k]) for k in METRICS} for v in (base, run))
    observed = {k: compare.paired(run[k], base[k]) for k in METRICS}
    print(json.dumps({"split": a.split, "surround_neurons": len(base["corr"]), "draws": a.draws,
                      "observed": observed,
                      "power": power(base, run, a.n, a.draws, a.seed)}, indent=1))


if __name__ == "__main__":
    main()
