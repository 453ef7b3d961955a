"""Which model recovers the truth better? In-silico results of several runs, paired over neurons.

    python -m tfsacnn.insilico.compare A B [C ...] --baseline A --out DIR

Each argument is an `insilico` output directory (holding insilico.json) or a run
directory (its `insilico/`). All must come from the same simulated site (the same
`data`, with truth) and are paired over the neurons they share. Per neuron, the
recovery errors of `tfsacnn.insilico.truth.per_neuron_errors` (orientation error in
degrees, RF-centre error in px, SF error in octaves, |SSI error|, |CMI error|); for
each run against the baseline: the mean paired difference (run - baseline; < 0: the run
is closer to the truth) with a bootstrap 95 % interval over neurons, and the fraction
of neurons where the run is closer. Across neurons, the correlations with the truth
(SSI, CMI) and their paired bootstrap difference. Writes DIR/compare.json and
DIR/compare.csv; prints a table. Errors: one line, exit status 2.
"""
from __future__ import annotations

import argparse
import io
import json
import pathlib
import sys

import numpy as np

from tfsacnn.errors import OneLineParser, add_output_flags, int_at_least, run_cli
from tfsacnn.files import read_json, write_text

from .forward import InsilicoError
from .truth import pearson, per_neuron_errors

CORRELATIONS = (("size", "ssi"), ("contrast_surround", "cmi"))


def load_result(path):
    """insilico.json of an output directory or of RUN/insilico -> (label, dict)."""
    p = pathlib.Path(path)
    for cand in (p / "insilico.json", p / "insilico" / "insilico.json", p):
        if cand.is_file():
            res = read_json(cand, InsilicoError)
            if "model" not in res or "neurons" not in res:
                raise InsilicoError(f"{cand}: not an insilico.json")
            if not res.get("truth"):
                raise InsilicoError(f"{cand}: has no truth (not a simulated site); "
                                    f"nothing to compare")
            return str(path), res
    raise InsilicoError(f"{p}: no insilico.json (run `tfsacnn insilico` first)")


def _arrays(section, keep):
    """{exp: {"per_neuron": {q: float array}}} for the neuron positions `keep`."""
    return {exp: {"per_neuron": {q: np.array([np.nan if x is None else x
                                              for x in np.asarray(v, object)[keep]], float)
                                 for q, v in r["per_neuron"].items()}}
            for exp, r in section.items() if isinstance(r, dict) and "per_neuron" in r}


def bootstrap_mean(d, draws=2000, seed=0):
    """Mean of the finite entries of `d` and its percentile-bootstrap 95 % interval."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (draws, len(d)))].mean(1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def bootstrap_corr_diff(m_run, m_base, truth, draws=2000, seed=0):
    """corr(run, truth) - corr(baseline, truth) and its paired bootstrap 95 % interval."""
    ok = np.isfinite(m_run) & np.isfinite(m_base) & np.isfinite(truth)
    a, b, t = m_run[ok], m_base[ok], truth[ok]
    diff = pearson(a, t) - pearson(b, t)
    if len(t) < 3:
        return diff, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(draws):
        i = rng.integers(0, len(t), len(t))
        boots.append(pearson(a[i], t[i]) - pearson(b[i], t[i]))
    boots = np.asarray(boots)
    boots = boots[np.isfinite(boots)]
    if len(boots) == 0:
        return diff, float("nan"), float("nan")
    return diff, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def compare(paths, baseline=None, draws=2000, seed=0):
    """The comparison dict (see the module docstring)."""
    loaded = [load_result(p) for p in paths]
    labels = [lab for lab, _ in loaded]
    if len(set(labels)) != len(labels):
        raise InsilicoError("runs: the same result is named twice")
    base = labels[0] if baseline is None else str(baseline)
    if base not in labels:
        raise InsilicoError(f"--baseline: {base!r} is not one of the compared runs")
    data = {res["data"] for _, res in loaded}
    if len(data) != 1:
        raise InsilicoError(f"runs: results come from different datasets "
                            f"({', '.join(sorted(data))}); pair runs of one site")
    shared = sorted(set.intersection(*(set(res["neurons"]) for _, res in loaded)))
    if len(shared) < 2:
        raise InsilicoError("runs: fewer than 2 neurons in common; nothing to pair")
    errs, models, truths = {}, {}, {}
    for lab, res in loaded:
        keep = [res["neurons"].index(i) for i in shared]
        models[lab] = _arrays(res["model"], keep)
        truths[lab] = _arrays(res["truth"], keep)
        errs[lab] = per_neuron_errors(models[lab], truths[lab])
    truth = truths[base]
    out = {"baseline": base, "runs": labels, "data": data.pop(), "neurons": shared,
           "draws": draws, "per_run": {}, "versus_baseline": {}}
    for lab in labels:
        out["per_run"][lab] = {
            "model_name": loaded[labels.index(lab)][1].get("model_name"),
            **{f"mean_{k}": float(np.nanmean(v)) if np.isfinite(v).any() else None
               for k, v in errs[lab].items()},
            **{f"corr_{q}": pearson(models[lab][e]["per_neuron"][q], truth[e]["per_neuron"][q])
               for e, q in CORRELATIONS if e in models[lab] and e in truth}}
        if lab == base:
            continue
        cmp = {}
        for k, v in errs[lab].items():
            if k not in errs[base]:
                continue
            d = v - errs[base][k]
            mean, lo, hi = bootstrap_mean(d, draws, seed)
            ok = np.isfinite(d)
            cmp[k] = {"mean_difference": mean, "ci95": [lo, hi],
                      "fraction_closer": float((d[ok] < 0).mean()) if ok.any() else None,
                      "n": int(ok.sum())}
        for e, q in CORRELATIONS:
            if e in models[lab] and e in models[base] and e in truth:
                diff, lo, hi = bootstrap_corr_diff(models[lab][e]["per_neuron"][q],
                                                   models[base][e]["per_neuron"][q],
                                                   truth[e]["per_neuron"][q], draws, seed)
                cmp[f"corr_{q}"] = {"difference": diff, "ci95": [lo, hi]}
        out["versus_baseline"][lab] = cmp
    return out


def _table(out):
    lines = [f"baseline: {out['baseline']}  ({len(out['neurons'])} neurons paired)"]
    for lab, cmp in out["versus_baseline"].items():
        lines.append(f"{lab} - baseline:")
        for k, v in cmp.items():
            lo, hi = v["ci95"]
            val = v.get("mean_difference", v.get("difference"))
            extra = (f"  closer on {v['fraction_closer']:.0%}" if v.get("fraction_closer")
                     is not None else "")
            lines.append(f"  {k:<26} {val:+.4g}  [{lo:+.4g}, {hi:+.4g}]{extra}")
    return "\n".join(lines)


def _csv(out):
    buf = io.StringIO()
    buf.write("run,quantity,difference,ci_low,ci_high,fraction_closer,n\n")
    for lab, cmp in out["versus_baseline"].items():
        for k, v in cmp.items():
            val = v.get("mean_difference", v.get("difference"))
            buf.write(f"{lab},{k},{val:.6g},{v['ci95'][0]:.6g},{v['ci95'][1]:.6g},"
                      f"{'' if v.get('fraction_closer') is None else v['fraction_closer']},"
                      f"{v.get('n', '')}\n")
    return buf.getvalue()


def main(argv=None):
    p = OneLineParser(prog="python -m tfsacnn.insilico.compare", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="insilico output or run directories")
    p.add_argument("--baseline", default=None, help="the run the others are compared with "
                                                    "(default: the first)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write compare.json and compare.csv here")
    p.add_argument("--draws", type=int_at_least(100), default=2000,
                   help="bootstrap resamples of the neurons")
    add_output_flags(p)
    args = p.parse_args(argv)

    def run():
        from .run import json_safe

        if len(args.runs) < 2:
            raise InsilicoError("runs: name at least two results to compare")
        out = compare(args.runs, args.baseline, args.draws)
        if args.out:
            d = pathlib.Path(args.out)
            if d.exists() and not d.is_dir():
                raise InsilicoError(f"{d}: is a file, not a directory (--out)")
            d.mkdir(parents=True, exist_ok=True)
            write_text(d / "compare.json", json.dumps(json_safe(out), indent=1) + "\n")
            write_text(d / "compare.csv", _csv(out))
        if not args.quiet:
            print(_table(out))

    return run_cli(run, path=args.out)


if __name__ == "__main__":
    sys.exit(main())
