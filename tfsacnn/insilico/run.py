"""`insilico(run_dir, ...)`: every experiment on a run (and on the truth), written to a folder.

Writes into `out` (default RUN/insilico), each file through a temporary and a rename:
- `insilico.json`: what ran (run, data, neurons, experiments, settings), per neuron
  every quantity of the model (and of the truth), the truth-recovery summary;
- `neurons.csv`: one row per neuron, `model_<quantity>` and `truth_<quantity>` columns;
- `curves.npz`: every curve (`model/<experiment>/<curve>`, `truth/...`) and the values
  on their axes;
- PNG pages (`plots.py`): orientation and SF tuning, size tuning, iso/cross/blank bars,
  a summary; and with `tensorboard`, the same pictures under `insilico/<name>`.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import pathlib
import time

import numpy as np

from . import plots as iplots
from .experiments import merge_settings, resolve, run_experiments
from .forward import InsilicoError, load_twin
from .mei import closed_loop_summary, truth_side
from .truth import PAIRED, per_neuron_errors, recovery, run_truth
from ..files import check_writable, write_bytes, write_npz
from ..runs import RunLock, check_data, dataset_name, run_file


def json_safe(v):
    """JSON-safe: arrays to lists, NaN/inf to None, numpy scalars to Python."""
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, np.ndarray):
        return json_safe(v.tolist())
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else round(float(v), 6)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def neuron_table(twin, model, truth):
    """Rows (dicts) of neurons.csv."""
    rows = []
    errs = per_neuron_errors(model, truth) if truth else {}
    has = None if twin.truth is None else twin.truth.has_surround
    for j in range(twin.n):
        row = {"neuron": int(twin.neurons[j]), "neuron_id": twin.neuron_ids[j]}
        if has is not None:
            row["has_surround"] = int(has[j])
        for exp, res in model.items():
            for q, v in res["per_neuron"].items():
                row[f"model_{q}"] = v[j]
                if truth and exp in truth and q in truth[exp]["per_neuron"]:
                    row[f"truth_{q}"] = truth[exp]["per_neuron"][q][j]
        for k, v in errs.items():
            row[k] = v[j]
        rows.append(row)
    return rows


def _csv_text(rows):
    buf = io.StringIO()
    keys = list(rows[0]) if rows else ["neuron"]
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if isinstance(v, float) and not np.isfinite(v) else
                        (f"{v:.6g}" if isinstance(v, (float, np.floating)) else v))
                    for k, v in r.items()})
    return buf.getvalue()


def _curves(model, truth):
    """{key: array} of curves.npz."""
    arrays = {}
    for label, res in (("model", model), ("truth", truth or {})):
        for exp, r in res.items():
            for name, a in r.get("curves", {}).items():
                arrays[f"{label}/{exp}/{name}"] = np.asarray(a)
            for name, a in r.get("values", {}).items():
                arrays[f"values/{exp}/{name}"] = np.asarray(a)
    return arrays


def pictures(twin, model, truth, what):
    """{name: Figure} of every page."""
    labels = [f"{i} ({nid})" for i, nid in zip(twin.neurons, twin.neuron_ids)]
    figs = {}
    t = truth or {}
    for p, idx in enumerate(iplots.pages(twin.n), 1):
        sfx = f"_p{p:02d}"
        if "grating" in model:
            g, tg = model["grating"], t.get("grating")
            figs[f"orientation_tuning{sfx}"] = iplots.curves_page(
                g["values"]["orientation_curve_deg"], g["curves"]["orientation_curve"],
                None if tg is None else tg["curves"]["orientation_curve"], labels, idx,
                f"{what}: orientation tuning at the optimal SF", "orientation (deg)",
                marks={"pref": (g["per_neuron"]["pref_orientation_deg"],
                                None if tg is None else tg["per_neuron"]["pref_orientation_deg"])})
            figs[f"sf_tuning{sfx}"] = iplots.curves_page(
                g["values"]["sf_curve"], g["curves"]["sf_curve"],
                None if tg is None else tg["curves"]["sf_curve"], labels, idx,
                f"{what}: SF tuning at the optimal orientation", "SF (cycles/px)", logx=True)
        if "size" in model:
            s, ts = model["size"], t.get("size")
            figs[f"size_tuning{sfx}"] = iplots.curves_page(
                s["values"]["diameter"], s["curves"]["size_curve"],
                None if ts is None else ts["curves"]["size_curve"], labels, idx,
                f"{what}: size tuning (dotted: GSF)", "diameter (px)", logx=True,
                marks={"gsf": (s["per_neuron"]["gsf"],
                               None if ts is None else ts["per_neuron"]["gsf"])})
        if "contrast_surround" in model:
            c, tc = model["contrast_surround"], t.get("contrast_surround")
            figs[f"contrast_surround{sfx}"] = iplots.contrast_surround_page(
                c["curves"]["responses"], None if tc is None else tc["curves"]["responses"],
                labels, idx, f"{what}: centre at the GSF with a blank, iso or cross surround")
        if "mei" in model:
            c = model["mei"]
            notes = {"MEI": model["mei"]["per_neuron"]["mei_relative"]}
            figs[f"mei{sfx}"] = iplots.image_grid_page(
                {"MEI": c["curves"]["mei"]}, labels, idx,
                f"{what}: MEIs (number: response / best dataset image's)", twin.pixel_range,
                notes)
        if "surround_mei" in model:
            c = model["surround_mei"]
            pn = c["per_neuron"]
            figs[f"surround_mei{sfx}"] = iplots.image_grid_page(
                {"centre": c["curves"]["surround_centre"], "raise": c["curves"]["surround_raise"],
                 "lower": c["curves"]["surround_lower"]}, labels, idx,
                f"{what}: MEI centre alone, most and least exciting surround (number: response)",
                twin.pixel_range, {"centre": pn["surround_centre_response"],
                                   "raise": pn["surround_raise_response"],
                                   "lower": pn["surround_lower_response"]})
    if truth:
        has = twin.truth.has_surround
        pairs = {f"{exp}: {q}": (model[exp]["per_neuron"][q], truth[exp]["per_neuron"][q], has)
                 for exp, q in PAIRED if exp in model and exp in truth
                 and q in ("pref_orientation_deg", "pref_sf", "ssi", "gsf", "cmi",
                           "centre_x", "centre_y", "suppression_iso")}
        if pairs:
            figs["summary"] = iplots.summary_page(pairs, f"{what}: model against truth")
    else:
        vals = {f"{exp}: {q}": model[exp]["per_neuron"][q]
                for exp, q in PAIRED if exp in model and q in model[exp]["per_neuron"]
                and q in ("pref_orientation_deg", "pref_sf", "ssi", "gsf", "cmi")}
        if vals:
            figs["summary"] = iplots.model_only_summary(vals, f"{what}: across neurons")
    return figs


def insilico(run_dir, data_dir=None, neurons=None, experiments=None, out=None,
             tensorboard=None, settings=None, step=0, log=print, split="val"):
    """Run `experiments` (None: all) on the run's neurons and the truth; write `out`.
    -> the insilico.json dict.

    `out` defaults to RUN/insilico, or RUN/insilico_<dataset> for another dataset named
    by `data_dir`; an `out` inside the run takes the run's lock (`tfsacnn.runs.RunLock`).
    Refuses (one line) a run whose own dataset has changed since it was trained.
    """
    names = resolve(experiments)                        # refuse an unknown name first
    settings = merge_settings(settings)
    if tensorboard is not None:
        check_writable(tensorboard, "--tensorboard", directory=True)
    run_dir = run_file(run_dir, "model.keras", InsilicoError,
                       f" (is {run_dir} a trained run directory?)").parent
    data_dir, same = check_data(run_dir, data_dir)     # refuses the run's own data changed
    if out is None:            # another dataset's results apart from the run's own
        out = run_dir / ("insilico" if same else f"insilico_{dataset_name(data_dir)}")
    out = pathlib.Path(out)
    check_writable(out, "--out", directory=True)       # before the long work
    inside = run_dir.resolve() in (out.resolve(), *out.resolve().parents)
    with RunLock(run_dir) if inside else contextlib.nullcontext():
        return _insilico(run_dir, data_dir, neurons, names, settings, out, tensorboard,
                         step, log, split)


def _insilico(run_dir, data_dir, neurons, names, settings, out, tensorboard, step, log,
              split):
    """`insilico` on checked arguments, into `out` (locked if in the run)."""
    from tfsacnn.evaluation.plots import figure_to_png
    from tfsacnn.files import write_text

    t0 = time.perf_counter()
    twin = load_twin(run_dir, data_dir, neurons, split=split)
    quiet = lambda msg: log(f"insilico: {msg}")        # noqa: E731
    model = run_experiments(twin, twin, names, settings, label="model", log=quiet)
    truth = run_truth(twin, names, settings, log=quiet)
    summary = None
    if truth is not None:
        for exp, res in truth_side(twin, model).items():   # the model's MEIs on the truth
            truth[exp] = res
        summary = recovery(model, truth, twin.truth.has_surround)
        summary.update(closed_loop_summary(model, truth))
    seconds = time.perf_counter() - t0
    what = f"{twin.model_name} ({pathlib.Path(twin.run_dir).name})"
    result = {
        "run": str(twin.run_dir), "data": str(twin.data_dir), "model_name": twin.model_name,
        "core": "independent" if twin.independent else "shared",
        "neurons": twin.neurons, "neuron_ids": twin.neuron_ids, "split": split,
        "experiments": names, "settings": settings,
        "stimulus_space": {"image_shape": list(twin.image_shape), "mean_grey": twin.mean_grey,
                           "pixel_range": list(twin.pixel_range), "norm": twin.norm,
                           "visible": list(twin.pipeline.visible)},
        "best_response": twin.best_response,
        "model": {exp: {"per_neuron": r["per_neuron"], **({"method": r["method"]}
                                                           if "method" in r else {})}
                  for exp, r in model.items()},
        "truth": None if truth is None else {
            "has_surround": twin.truth.has_surround,
            "best_response": twin.truth.best_response,
            **{exp: {"per_neuron": r["per_neuron"]} for exp, r in truth.items()}},
        "recovery": summary, "seconds": seconds,
    }
    result = json_safe(result)
    out.mkdir(parents=True, exist_ok=True)
    figs = pictures(twin, model, truth, what)
    pngs = {name: figure_to_png(fig) for name, fig in figs.items()}
    for name, png in pngs.items():
        write_bytes(out / f"{name}.png", png)
    write_npz(out / "curves.npz", _curves(model, truth))
    write_text(out / "neurons.csv", _csv_text(neuron_table(twin, model, truth)))
    result["files"] = ["insilico.json", "neurons.csv", "curves.npz"] + \
        [f"{n}.png" for n in pngs]
    write_text(out / "insilico.json", json.dumps(result, indent=1) + "\n")
    if tensorboard is not None:
        log_pictures(tensorboard, pngs, step, what)
        result["tensorboard"] = str(tensorboard)
    log(f"insilico: {what}: {twin.n} neurons, {', '.join(names)} in {seconds:.0f} s; "
        f"wrote {len(result['files'])} files to {out}"
        + (f"; logged {len(pngs)} images to {tensorboard}" if tensorboard else ""))
    if summary:
        log("insilico: recovery of the truth: " + ", ".join(
            f"{k} {v:.3g}" for k, v in summary.items() if v is not None and np.isfinite(v)))
    return result


def log_pictures(logdir, pngs, step, what):
    """PNG pages as TensorBoard images `insilico/<name>` (event files written without
    TensorFlow, so this works on a JAX-only machine too)."""
    from tfsacnn.training.callbacks import EventWriter

    writer = EventWriter(logdir)
    try:
        for name, png in pngs.items():
            writer.image(f"insilico/{name}", png, step, description=what)
        writer.flush()
    finally:
        writer.close()
