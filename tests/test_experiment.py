"""studies.sa_vs_cnn.experiment end to end on a tiny version of studies/sa_vs_cnn/sa_vs_cnn.yaml."""
import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO
from studies.sa_vs_cnn import experiment

SA_VS_CNN = REPO / "studies" / "sa_vs_cnn" / "sa_vs_cnn.yaml"
TINY = ["sites.seeds=[0]", "sites.neurons=3", "sites.surround_fraction=0.67", "sites.train=200",
        "sites.val=60", "sites.test=60", "sites.repeats=3", "train.epochs=1",
        "model.overrides={channels: 4}", "eval.tuning_curve_neurons=1", "eval.top_k=3",
        "causal.pairs=20"]


def _argv(out, *extra):
    return [str(SA_VS_CNN), "--out", str(out), *[x for s in TINY for x in ("--set", s)], *extra]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The tiny study, run once: its OUT directory."""
    out = tmp_path_factory.mktemp("study") / "exp"
    assert experiment.main(_argv(out)) == 0
    return out


@pytest.mark.slow
def test_tiny_study_end_to_end(tiny_study, capsys):
    """The whole pre-registered pipeline: 2 surround models x 1 seed x 2 models, 1 epoch
    (pooling over seeds: test_statistics_pool_sites_and_holm_correct_the_family)."""
    from tfsacnn.evaluation import compare

    out = tiny_study
    exp = experiment.load(SA_VS_CNN, TINY, out)
    df = pd.read_csv(out / "neurons.csv")
    assert len(df) == 2 * 2 * 3                          # surround models x models x neurons
    assert set(df["surround_model"]) == {"fixed", "gated"} and set(df["seed"]) == {0}
    for sm in ("fixed", "gated"):
        for seed in (0,):
            site = out / "sites" / f"{sm}_seed{seed}"
            with np.load(site / "ground_truth.npz") as gt:
                assert ("surround_model" in gt.files) == (sm == "gated")
                has = gt["has_surround"]
            for m in ("ff_cnn", "ff_sa_cnn"):
                run = out / "runs" / f"{sm}_seed{seed}" / m
                rows = df[(df["site"] == f"{sm}_seed{seed}") & (df["model"] == m)].sort_values("neuron")
                per = compare.load_run(run, "test")["per_neuron"]     # the test split is reported
                np.testing.assert_allclose(rows["corr"], per["corr"], rtol=1e-6)
                assert (rows["has_surround"].to_numpy() == has).all()
                # controls: the true change is 0, so no correlation or slope; a false surround
                ctl = rows[~rows["has_surround"]]
                assert ctl["causal_slope"].isna().all() and (ctl["false_surround"] >= 0).all()
    summary = json.loads((out / "summary.json").read_text())
    tests = summary["hypotheses"]
    assert [(t["id"], t["surround_model"], t["metric"]) for t in tests] == [
        (f"H{i + 1}", sm, h["metric"]) for sm in ("fixed", "gated")
        for i, h in enumerate(exp["hypotheses"])]
    # the family is Holm-corrected; zero differences kept (n paired = every surround neuron)
    raw = [np.nan if t["p"] is None else t["p"] for t in tests]
    want = compare.holm(raw)
    for t, p in zip(tests, want):
        assert (t["p_holm"] is None) == np.isnan(p) and (t["p_holm"] is None or t["p_holm"] == pytest.approx(p))
        assert t["holds"] == bool(t["p_holm"] is not None and t["diff"] > 0 and t["p_holm"] < 0.05)
    h1 = tests[0]                                                    # fixed, CORR, surround neurons
    sur = df[(df["surround_model"] == "fixed") & df["has_surround"]]
    a = sur[sur["model"] == "ff_sa_cnn"].set_index(["site", "neuron"])["corr"]
    b = sur[sur["model"] == "ff_cnn"].set_index(["site", "neuron"])["corr"].reindex(a.index)
    assert h1["n_paired"] == len(a) == 2
    assert h1["diff"] == pytest.approx(float(np.round(a - b, 9).mean()))
    assert h1["ci_low"] <= h1["diff"] <= h1["ci_high"]
    md = (out / "table.md").read_text()
    assert "### Pre-registered hypotheses" in md and "### Exploratory" in md
    assert 'zero_method="zsplit"' in md and "Holm" in md and "Surround captured" not in md
    timings = json.loads((out / "timings.json").read_text())
    assert {"site fixed_seed0", "gated_seed0/ff_sa_cnn", "score gated_seed0"} <= set(timings)
    # a second call reuses the sites and the finished runs, and keeps their wall times
    capsys.readouterr()
    assert experiment.main(_argv(out)) == 0
    assert capsys.readouterr().out.count("reusing finished run") == 4
    again = json.loads((out / "timings.json").read_text())
    assert {k: v for k, v in again.items() if k != "this_call"} == \
        {k: v for k, v in timings.items() if k != "this_call"}        # nothing redone
    assert json.loads((out / "summary.json").read_text())["hypotheses"] == tests
    # a different experiment in the same directory is refused
    assert experiment.main(_argv(out, "--set", "train.epochs=2")) == 2
    assert "different experiment" in capsys.readouterr().err
    # a finished run continued with other settings no longer matches the experiment
    import shutil

    import yaml

    from tfsacnn import config as config_lib

    copy = out.parent / "changed"                 # the fixture's runs stay as they are
    shutil.copytree(out, copy)
    record = yaml.safe_load((copy / "experiment.yaml").read_text())
    (copy / "experiment.yaml").write_text(yaml.safe_dump({**record, "out": str(copy)}, sort_keys=False))
    cfg_path = copy / "runs" / "fixed_seed0" / "ff_cnn" / "config.yaml"
    config_lib.dump(config_lib.load(cfg_path, ["train.epochs=2"]), cfg_path)
    assert experiment.main(_argv(copy)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "fixed_seed0/ff_cnn: finished with other settings" in err
    assert "train.epochs is 2, the experiment's 1" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_exploratory_scripts_on_the_tiny_study(tiny_study):
    """studies/sa_vs_cnn/{sa_diagnostics,pt_power,pt_sample_size}.py on the tiny runs."""
    import subprocess
    import sys

    from tfsacnn.evaluation import compare

    site, runs = tiny_study / "sites" / "gated_seed0", tiny_study / "runs" / "gated_seed0"
    has = np.load(site / "ground_truth.npz")["has_surround"].astype(bool)

    def script(name, *args):
        done = subprocess.run([sys.executable, str(REPO / "studies" / "sa_vs_cnn" / name), *map(str, args)],
                              capture_output=True, text=True, check=True, cwd=REPO)
        return json.loads(done.stdout)

    diag = script("sa_diagnostics.py", runs / "ff_sa_cnn", site)
    assert 0 < diag["entropy_over_uniform"] <= 1 and 0 <= diag["logit_share_from_centre_content"] <= 1
    run_corr = np.array(json.loads((runs / "ff_sa_cnn" / "metrics.json").read_text())
                        ["splits"]["test"]["per_neuron"]["corr"])
    assert diag["corr"]["surround"] == pytest.approx(np.nanmean(run_corr[has]), abs=1e-4)
    power = script("pt_power.py", site, runs / "ff_cnn", runs / "ff_sa_cnn", "--images", "300", "--per-neuron")
    rows = power["neurons"]
    assert [r["surround"] for r in rows] == has.tolist() and power["top_k"] == 3
    for r in rows:
        for m in ("PT_J", "CORR", "top_overlap", "peak_height"):
            assert r[f"delta_{m}"] == pytest.approx(r[f"{m}_run"] - r[f"{m}_baseline"], abs=2e-4)
        if not r["surround"]:                    # no surround: the peaks are the CRF's
            assert r["peak_overlap_crf_only"] == 1.0
    sizes = script("pt_sample_size.py", runs / "ff_cnn", runs / "ff_sa_cnn", "--n", "4", "--draws", "5")
    pair = [compare.load_run(runs / m, "test") for m in ("ff_cnn", "ff_sa_cnn")]
    for m in ("corr", "pt_s", "pt_j"):
        want = compare.paired(pair[1]["per_neuron"][m][has], pair[0]["per_neuron"][m][has])
        assert sizes["observed"][m]["p"] == pytest.approx(want["p"])
    assert sizes["surround_neurons"] == int(has.sum())


def test_statistics_pool_sites_and_holm_correct_the_family():
    """Neurons of every seed are pooled, each paired within its own site; zero
    differences count; the Holm family is every hypothesis x surround model."""
    from scipy import stats

    from tfsacnn.evaluation import compare

    exp = experiment.load(SA_VS_CNN)
    rng = np.random.default_rng(0)
    rows = []
    for sm in ("fixed", "gated"):
        for seed in (100, 101, 102):
            for n in range(4):
                base = {m: rng.uniform(0.2, 0.6) for m in experiment.METRICS}
                gain = 0.0 if n == 0 else (0.05 if sm == "gated" else rng.normal(0, 0.01))
                for model, add in (("ff_cnn", 0.0), ("ff_sa_cnn", gain)):
                    rows.append({"site": f"{sm}_seed{seed}", "surround_model": sm, "seed": seed,
                                 "neuron": n, "has_surround": n < 3, "noise_ceiling": 0.8,
                                 "model": model, **{m: v + add for m, v in base.items()}})
    df = pd.DataFrame(rows).sample(frac=1, random_state=0)            # order must not matter
    tests = experiment.statistics(exp, df)
    assert len(tests) == 2 * len(exp["hypotheses"])
    gated_corr = next(t for t in tests if t["surround_model"] == "gated" and t["metric"] == "corr")
    assert gated_corr["n_paired"] == 9 and gated_corr["n_improved"] == 6    # 3 zero differences
    d = np.array([0.0, 0.05, 0.05] * 3)
    assert gated_corr["p"] == pytest.approx(stats.wilcoxon(d, zero_method="zsplit").pvalue)
    assert gated_corr["diff"] == pytest.approx(d.mean())
    np.testing.assert_allclose([t["p_holm"] for t in tests], compare.holm([t["p"] for t in tests]))
    pt = next(t for t in tests if t["surround_model"] == "gated" and t["metric"] == "pt_j")
    assert pt["diff"] == pytest.approx(100 * d.mean())                 # PT in %
    assert gated_corr["holds"] == (gated_corr["p_holm"] < 0.05)


def test_plan_sizes_the_study_without_running(tmp_path, capsys):
    out = tmp_path / "never"
    assert experiment.main([str(SA_VS_CNN), "--out", str(out), "--plan", "--rate", "1000"]) == 0
    got = json.loads(capsys.readouterr().out)
    exp = experiment.load(SA_VS_CNN)
    s = exp["sites"]
    want = (len(s["surround_models"]) * len(s["seeds"]) * s["neurons"] * s["train"]
            * exp["train"]["epochs"] * len(exp["models"]))
    assert got["train_neuron_images"] == want
    assert got["training_hours"] == pytest.approx(want / 1000 / 3600, abs=0.01)
    assert got["neurons_per_surround_model"]["surround"] >= 3 * 2 and len(s["seeds"]) >= 3
    assert not out.exists()


def test_shipped_study_is_preregistered():
    """Both shipped studies declare hypotheses, three or more site seeds, the test split."""
    for name in ("sa_vs_cnn.yaml", "sa_vs_cnn_gpu.yaml"):
        exp = experiment.load(REPO / "studies" / "sa_vs_cnn" / name)
        assert exp["preregistered"] and exp["hypotheses"] and exp["report"]["split"] == "test"
        assert len(exp["sites"]["seeds"]) >= 3 and set(exp["sites"]["surround_models"]) == {"fixed", "gated"}
        assert exp["eval"]["selection_split"] == "val"


@pytest.mark.parametrize("item, message", [
    ("sitee.neurons=3", "unknown key 'sitee'"),
    ("sites.neuron=3", "unknown key 'sites.neuron'"),
    ("train.epoch=3", "unknown key 'train.epoch'"),
    ("models=[ff_cnn, nope]", "unknown model 'nope'"),
    ("report.split=train", "report.split"),
    ("sites.surround_models=[fixed, flexible]", "sites.surround_models"),
    ("sites.surround_fraction=1.0", "both groups"),
    ("statistics.wilcoxon_zero_method=wilcox", "zsplit"),
    ("statistics.correction=bonferroni", "holm"),
    ("hypotheses=[]", "hypotheses"),
    ("hypotheses=[{model: ff_sa_cnn, baseline: rf_cnn, group: surround, metric: corr}]", "baseline"),
    ("hypotheses=[{model: ff_sa_cnn, baseline: ff_cnn, group: surround, metric: captured}]", "metric"),
    ("eval.selection_split=test", "selection_split"),
    ("sites.gate_width=0.5", "the simulator's is 0.25"),
])
def test_bad_keys_are_one_line_errors(tmp_path, capsys, item, message):
    assert experiment.main([str(SA_VS_CNN), "--out", str(tmp_path / "x"), "--set", item]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_unknown_key_in_yaml(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SA_VS_CNN.read_text() + "\nepochs: 3\n")
    assert experiment.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'epochs'" in err and err.count("\n") == 1


def test_out_that_is_not_an_experiment_is_never_written_or_deleted(tmp_path, capsys):
    def error(out, *extra):
        assert experiment.main([str(SA_VS_CNN), "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
        return err

    (tmp_path / "a_file").write_text("x")
    assert "a_file: is a file, not an experiment directory" in error(tmp_path / "a_file")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "lab_notes.txt").write_text("keep me")
    assert "not an experiment directory (no experiment.yaml)" in error(notes, "--overwrite")
    assert [p.name for p in notes.iterdir()] == ["lab_notes.txt"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "experiment.yaml").write_text("site: [unclosed\n")
    assert f"{broken / 'experiment.yaml'}: not valid YAML" in error(broken)
