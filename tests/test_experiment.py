"""studies.sa_vs_cnn.experiment: units, the seal, pinned code, directional statistics,
on a tiny version of studies/sa_vs_cnn/sa_vs_cnn.yaml."""
import itertools
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO
from studies.sa_vs_cnn import experiment

SA_VS_CNN = REPO / "studies" / "sa_vs_cnn" / "sa_vs_cnn.yaml"
SA_VS_CNN_GPU = REPO / "studies" / "sa_vs_cnn" / "sa_vs_cnn_gpu.yaml"
TINY = ["sites.seeds={fixed: [0], gated: [1]}", "unit_order=[gated_seed1, fixed_seed0]",
        "sites.neurons=3", "sites.surround_fraction=0.67", "sites.train=200",
        "sites.val=60", "sites.test=60", "sites.repeats=3", "train.epochs=1",
        "model.overrides={channels: 4}", "eval.top_k=3", "causal.triples=20",
        "statistics.bootstrap_resamples=200"]


def _argv(out, results, *extra, config=SA_VS_CNN, sets=TINY):
    return [str(config), "--out", str(out), "--results", str(results),
            *[x for s in sets for x in ("--set", s)], *extra]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The tiny study's units, run once: (WORKDIR, RESULTSDIR)."""
    root = tmp_path_factory.mktemp("study")
    out, results = root / "work", root / "results"
    assert experiment.main(_argv(out, results)) == 0
    return out, results


@pytest.mark.slow
def test_tiny_study_units_are_sealed_pinned_and_resumable(tiny_study, capsys, monkeypatch):
    """Units write val-only records with the commit and the config hash; a second call
    skips them; --final scores test once, for every unit."""
    out, results = tiny_study
    exp = experiment.load(SA_VS_CNN, TINY, out)
    for name in exp["unit_order"]:
        rec = json.loads((results / f"{name}.json").read_text())
        assert rec["split"] == "val" and rec["config_sha256"] == experiment.config_sha256(exp)
        assert rec["commit"] == experiment.code_commit() and len(rec["rows"]) == 2 * 3
        assert "test" not in json.dumps(rec["rows"])
        for m in exp["models"]:          # no training run scored the sealed split
            metrics = json.loads((out / "runs" / name / m / "metrics.json").read_text())
            assert list(metrics["splits"]) == ["val"]
            per = metrics["splits"]["val"]["per_neuron"]["corr"]
            mine = [r["corr"] for r in rec["rows"] if r["model"] == m]
            np.testing.assert_allclose(mine, per, rtol=1e-5, atol=1e-6)
        ctl = [r for r in rec["rows"] if not r["has_surround"]]
        assert all(r["causal_fve"] is None and r["false_surround"] >= 0 for r in ctl)
    capsys.readouterr()
    assert experiment.main(_argv(out, results)) == 0
    assert "0 unit(s) done this call, 2 already done" in capsys.readouterr().out
    for name in exp["unit_order"]:       # test predictions sealed; the weights not needed
        assert experiment.sealed_path(results, name).is_file()
    shutil.rmtree(out / "runs")
    # another commit: refused, then allowed and said in the report
    monkeypatch.setenv("TFSACNN_COMMIT", "another-commit")
    assert experiment.main(_argv(out, results, "--final")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--allow-mixed-code" in err and err.count("\n") == 1
    assert not (results / "final").exists()
    assert experiment.main(_argv(out, results, "--final", "--allow-mixed-code")) == 0
    md = (results / "final" / "table.md").read_text()
    assert "Mixed code (--allow-mixed-code)" in md and "another-commit" in md
    summary = json.loads((results / "final" / "summary.json").read_text())
    assert summary["split"] == "test" and len(summary["hypotheses"]) == 4
    df = pd.read_csv(results / "final" / "neurons.csv")
    assert len(df) == 2 * 2 * 3 and set(df["unit"]) == set(exp["unit_order"])
    # the full study's s.d. of H1's paired CORR difference, beside the pilot's
    for sm in exp["sites"]["surround_models"]:
        one = df[df["surround_model"] == sm]
        wide = one.pivot_table(index=["unit", "neuron"], columns="model", values="corr")
        surround = one.groupby(["unit", "neuron"])["has_surround"].first()
        for group, mask in (("surround", surround), ("control", ~surround)):
            d = (wide["ff_sa_cnn"] - wide["ff_cnn"])[mask]
            got = summary["sd"][sm]["H1"][f"sd_{group}"]
            if len(d) > 1:
                np.testing.assert_allclose(got, d.std(ddof=1), rtol=1e-6)
            else:
                assert got is None
    assert "beside the pilot's" in md
    # the test split is read once
    assert experiment.main(_argv(out, results, "--final", "--allow-mixed-code")) == 2
    assert "read once" in capsys.readouterr().err


def _fake_records(exp, results, names, commit="abc"):
    results.mkdir(parents=True, exist_ok=True)
    for name in names:
        (results / f"{name}.json").write_text(json.dumps(
            {"unit": name, "commit": commit, "config_sha256": experiment.config_sha256(exp),
             "rows": []}))


def test_final_refuses_unfinished_units_and_other_code(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TFSACNN_COMMIT", "abc")
    out, results = tmp_path / "work", tmp_path / "results"
    exp = experiment.load(SA_VS_CNN, TINY, out)
    _fake_records(exp, results, ["gated_seed1"])
    assert experiment.main(_argv(out, results, "--final")) == 2
    err = capsys.readouterr().err
    assert "1 unit(s) unfinished (fixed_seed0)" in err and err.count("\n") == 1
    _fake_records(exp, results, ["fixed_seed0"], commit="old")
    assert experiment.main(_argv(out, results, "--final")) == 2
    assert "fixed_seed0: commit old" in capsys.readouterr().err
    # another config (hash) is refused the same way
    assert experiment.main(_argv(out, results, "--final", sets=TINY + ["causal.seed=1"])) == 2
    assert "another commit/config" in capsys.readouterr().err
    # with --allow-mixed-code it goes on, and needs every unit's sealed test predictions
    assert experiment.main(_argv(out, results, "--final", "--allow-mixed-code")) == 2
    err = capsys.readouterr().err
    assert "gated_seed1.sealed.npz: missing" in err and err.count("\n") == 1
    assert not (results / "final").exists()


# --------------------------------------------------------------------------- sealed predictions
SMALL = TINY + ["sites.train=10"]


def _stand_in(params):
    """A stand-in trained model: images (B, S, S, 1) -> (B, n), the truth's noise-free
    responses scaled, plus a neuron-independent term (a false surround)."""
    from data_prep import v1_model

    def predict(x):
        x = np.asarray(x, np.float64)
        return (0.8 * v1_model.responses(x[..., 0], params)
                + 0.3 * x[..., 0].mean((1, 2))[:, None]).astype(np.float32)
    return predict


def _stand_in_predictions(exp, site):
    """`experiment.predict_unit`'s dict for two stand-in models, from the test images."""
    from data_prep import v1_model
    from tfsacnn.evaluation import analyze

    images = experiment.split_images(site, "test")
    params = v1_model.load_params(site / "ground_truth.npz")
    weights, triples = experiment.causal_design(exp, images, params)
    out = {}
    for k, m in enumerate(exp["models"]):
        predict = _stand_in(params) if k == 0 else (lambda x, f=_stand_in(params): 2 * f(x) + 1)
        out[m] = {"images": predict(images),
                  "triples": analyze.triple_responses(predict, images, weights, triples)}
    return out


def test_scores_from_predictions_match_numpy_and_the_direct_causal_test(tmp_path):
    """CORR against the split's own responses (np.corrcoef), the causal scores from the
    sealed responses equal analyze.causal_triples run on the model itself."""
    from data_prep import v1_model
    from tfsacnn import data as data_lib
    from tfsacnn.evaluation import analyze

    exp = experiment.load(SA_VS_CNN, SMALL, tmp_path / "w")
    site = tmp_path / "site"
    experiment.make_site(exp, site, "fixed", 0, lambda m: None)
    preds = _stand_in_predictions(exp, site)
    rows = pd.DataFrame(experiment.score_predictions(exp, site, "fixed", 0, preds, "test"))
    images, y = data_lib.load_numpy(site, "test")
    params = v1_model.load_params(site / "ground_truth.npz")
    c = exp["causal"]
    for m in exp["models"]:
        got = rows[rows["model"] == m].sort_values("neuron")
        pred = np.asarray(preds[m]["images"], np.float64)
        want = [np.corrcoef(y[:, j], pred[:, j])[0, 1] for j in range(y.shape[1])]
        np.testing.assert_allclose(got["corr"], want, rtol=1e-6)
        k = exp["models"].index(m)
        predict = _stand_in(params) if k == 0 else (lambda x: 2 * _stand_in(params)(x) + 1)
        ref = analyze.causal_triples(predict, images, params, c["triples"], seed=c["seed"],
                                     seam=float(c["seam_px"]), fraction=float(c["centre_fraction"]))
        sur = ref["has_surround"]
        np.testing.assert_allclose(got["causal_fve"].to_numpy()[sur], ref["fve"][sur], rtol=1e-6)
        assert got["causal_fve"].isna().to_numpy()[~sur].all()
        np.testing.assert_allclose(got["false_surround"], ref["change_rms"], rtol=1e-6)
        # fve by hand from the sealed responses and the truth's change
        r = np.asarray(preds[m]["triples"], np.float64)
        mc, tc = r[0] - r[1], ref["true_change"]
        mc, tc = mc - mc.mean(0), tc - tc.mean(0)
        fve = 1 - ((mc - tc) ** 2).sum(0)[sur] / (tc ** 2).sum(0)[sur]
        np.testing.assert_allclose(got["causal_fve"].to_numpy()[sur], fve, rtol=1e-6)
    bad = {m: {**p, "images": p["images"][:-1]} for m, p in preds.items()}
    with pytest.raises(experiment.TfsacnnError, match="predictions of .* have shapes"):
        experiment.score_predictions(exp, site, "fixed", 0, bad, "test")


def test_final_scores_the_sealed_predictions_without_the_workdir(tmp_path, capsys, monkeypatch):
    """Units sealed in one WORKDIR, which is then deleted: --final synthesizes the sites
    again from their seeds (same test images: the hash is checked) and scores test."""
    monkeypatch.setenv("TFSACNN_COMMIT", "abc")
    old, out, results = tmp_path / "old", tmp_path / "new", tmp_path / "results"
    exp = experiment.load(SA_VS_CNN, SMALL, old)
    _fake_records(exp, results, exp["unit_order"])
    preds = {}
    for name, sm, seed in experiment.units(exp):
        site = old / "sites" / name
        experiment.make_site(exp, site, sm, seed, lambda m: None)
        preds[name] = _stand_in_predictions(exp, site)
        experiment.write_sealed(experiment.sealed_path(results, name), name, "abc",
                                experiment.config_sha256(exp),
                                experiment.images_sha256(experiment.split_images(site, "test")),
                                preds[name])
        assert experiment.sealed_path(results, name).stat().st_size < 100_000
    shutil.rmtree(old)
    assert experiment.main(_argv(out, results, "--final", sets=SMALL)) == 0
    df = pd.read_csv(results / "final" / "neurons.csv")
    assert len(df) == 2 * 2 * 3
    from tfsacnn import data as data_lib
    for name in exp["unit_order"]:
        _, y = data_lib.load_numpy(out / "sites" / name, "test")
        for m in exp["models"]:
            pred = np.asarray(preds[name][m]["images"], np.float64)
            want = [np.corrcoef(y[:, j], pred[:, j])[0, 1] for j in range(3)]
            got = df[(df["unit"] == name) & (df["model"] == m)].sort_values("neuron")["corr"]
            np.testing.assert_allclose(got, want, rtol=1e-6)
    capsys.readouterr()
    assert experiment.main(_argv(out, results, "--final", sets=SMALL)) == 2
    assert "read once" in capsys.readouterr().err


def test_final_refuses_a_site_whose_test_images_differ_from_the_sealed(tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.setenv("TFSACNN_COMMIT", "abc")
    out, results = tmp_path / "work", tmp_path / "results"
    exp = experiment.load(SA_VS_CNN, SMALL, out)
    _fake_records(exp, results, exp["unit_order"])
    for name, _, _ in experiment.units(exp):
        experiment.write_sealed(experiment.sealed_path(results, name), name, "abc",
                                experiment.config_sha256(exp), "0" * 64,
                                {m: {"images": np.zeros((60, 3)), "triples": np.zeros((2, 20, 3))}
                                 for m in exp["models"]})
    assert experiment.main(_argv(out, results, "--final", sets=SMALL)) == 2
    err = capsys.readouterr().err
    assert "test images are not those" in err and err.count("\n") == 1
    assert not (results / "final").exists()
    # a sealed file of another commit than its record is refused
    _fake_records(exp, results, ["fixed_seed0"], commit="abc2")
    monkeypatch.setenv("TFSACNN_COMMIT", "abc2")
    assert experiment.main(_argv(out, results, "--final", "--allow-mixed-code", sets=SMALL)) == 2
    assert "not the sealed predictions of unit fixed_seed0" in capsys.readouterr().err


def test_time_limit_starts_no_unit_that_would_not_fit(tmp_path, capsys):
    out, results = tmp_path / "work", tmp_path / "results"
    assert experiment.main(_argv(out, results, "--time-limit-s", "5", "--rate", "1")) == 0
    text = capsys.readouterr().out
    assert "unit gated_seed1: not started" in text and "2 left: gated_seed1, fixed_seed0" in text
    assert not results.exists() or not any(results.iterdir())


def test_finished_units_are_skipped_in_the_registered_order(tmp_path, monkeypatch):
    exp = experiment.load(SA_VS_CNN, TINY, tmp_path / "w")
    _fake_records(exp, tmp_path / "r", ["gated_seed1"])
    ran = []
    monkeypatch.setattr(experiment, "run_unit", lambda e, o, r, name, *a: ran.append(name) or 1.0)
    got = experiment.run_units(exp, tmp_path / "w", tmp_path / "r", None, 1400, lambda m: None)
    assert ran == ["fixed_seed0"] and got == {"done": ["fixed_seed0"], "skipped": ["gated_seed1"],
                                              "left": []}


def test_code_commit_and_config_hash(monkeypatch):
    monkeypatch.setenv("TFSACNN_COMMIT", "deadbeef")
    assert experiment.code_commit() == "deadbeef"
    monkeypatch.delenv("TFSACNN_COMMIT")
    c = experiment.code_commit()
    assert c == "unknown" or len(c.removesuffix("-dirty")) == 40
    a = experiment.load(SA_VS_CNN, TINY, "x")
    assert experiment.config_sha256(a) == experiment.config_sha256(experiment.load(SA_VS_CNN, TINY, "y"))
    assert experiment.config_sha256(a) != experiment.config_sha256(
        experiment.load(SA_VS_CNN, TINY + ["train.epochs=2"], "x"))


# --------------------------------------------------------------------------- statistics
def test_directional_verdict_does_not_reverse():
    """17 neurons slightly worse and 1 much better: the old rule (mean > 0 and two-sided
    Holm p < alpha) said "holds"; the one-sided test in the registered direction does not."""
    from tfsacnn.evaluation import compare

    base = np.linspace(0.3, 0.5, 18)
    model = base - 0.01
    model[0] = base[0] + 0.5
    old = compare.paired(model, base)
    assert old["diff"] > 0 and compare.holm([old["p"]] * 3)[0] < 0.05     # the old rule: holds
    new = compare.directional_paired(model, base, "greater", resamples=500)
    assert new["estimate"] < 0 and new["p"] > 0.5 and new["n_improved"] == 1
    assert not compare.directional_verdict(new["estimate"], new["p"], 0.05, "greater")
    worse = compare.directional_paired(model, base, "less", resamples=500)
    assert worse["p"] < 0.05 and compare.directional_verdict(worse["estimate"], worse["p"], 0.05, "less")
    assert not compare.directional_verdict(0.1, 0.001, 0.05, "less")        # wrong sign
    assert not compare.directional_verdict(0.1, float("nan"), 0.05, "greater")


def test_one_sided_tests_against_exact_enumeration():
    """Signed-rank p = P(W+ >= observed) over all 2^n sign flips; rank-sum p = P(U >= observed)
    over all splits; Hodges-Lehmann = median of Walsh averages / of pairwise differences."""
    from scipy.stats import rankdata

    from tfsacnn.evaluation import compare

    d = np.array([0.31, -0.12, 0.05, 0.22, -0.04, 0.17, 0.09, -0.26, 0.13, 0.4])
    ranks = rankdata(np.abs(d))
    w = ranks[d > 0].sum()
    flips = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(d))]
    got = compare.directional_paired(d, np.zeros_like(d), "greater", resamples=300)
    assert got["p"] == pytest.approx(np.mean(np.array(flips) >= w - 1e-9))
    walsh = [(d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d))]
    assert got["estimate"] == pytest.approx(np.median(walsh))
    assert got["ci_low"] <= got["estimate"] <= got["ci_high"]
    x, y = np.array([0.3, 0.5, 0.2, 0.45]), np.array([0.1, -0.05, 0.25])
    pooled = np.concatenate([x, y])
    u_obs = sum(a > b for a in x for b in y)
    us = [sum(pooled[i] > pooled[j] for i in idx for j in set(range(7)) - set(idx))
          for idx in itertools.combinations(range(7), 4)]
    two = compare.directional_two_sample(x, y, "greater", resamples=300)
    assert two["p"] == pytest.approx(np.mean(np.array(us) >= u_obs))
    assert two["estimate"] == pytest.approx(np.median([a - b for a in x for b in y]))
    miss = compare.directional_paired(np.array([1.0, np.nan, 2.0]), np.array([0.0, 1.0, 1.0]))
    assert miss["n_missing"] == 1 and miss["n_paired"] == 2          # counted, not silent


def _rows(gain_surround, gain_control, metric_noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for sm, seeds in (("fixed", (1, 2)), ("gated", (3, 4))):
        for s in seeds:
            for n in range(4):
                has = n < 3
                base = {m: rng.uniform(0.2, 0.6) for m in experiment.METRICS}
                gain = gain_surround if has else gain_control
                for model, add in (("ff_cnn", 0.0), ("ff_sa_cnn", gain + rng.normal(0, metric_noise))):
                    rows.append({"unit": f"{sm}_seed{s}", "surround_model": sm, "seed": s,
                                 "neuron": n, "has_surround": has, "noise_ceiling": 0.8,
                                 "model": model, **{m: v + add for m, v in base.items()}})
    return pd.DataFrame(rows).sample(frac=1, random_state=0)        # order must not matter


def test_statistics_difference_in_differences_and_holm():
    """H1 (did) compares the surround neurons' gain with the controls': the same gain in
    both is no evidence; H2 (paired) is on the surround neurons; Holm over the family."""
    from tfsacnn.evaluation import compare

    exp = experiment.load(SA_VS_CNN, TINY + ["statistics.bootstrap_resamples=200"])
    exp["sites"]["seeds"] = {"fixed": [1, 2], "gated": [3, 4]}
    same = experiment.statistics(exp, _rows(0.05, 0.05, 0.001))
    h1 = [t for t in same if t["id"] == "H1"]
    assert len(same) == 4 and all(not t["holds"] and abs(t["estimate"]) < 0.01 for t in h1)
    h2 = [t for t in same if t["id"] == "H2"]
    assert all(t["n_paired"] == 6 and t["estimate"] == pytest.approx(0.05, abs=0.01) for t in h2)
    np.testing.assert_allclose([t["p_holm"] for t in same], compare.holm([t["p"] for t in same]))
    more = experiment.statistics(exp, _rows(0.05, 0.0, 0.001))
    assert all(t["estimate"] == pytest.approx(0.05, abs=0.01) and t["n_x"] == 6 and t["n_y"] == 2
               for t in more if t["id"] == "H1")


def test_pilot_sd_per_hypothesis():
    exp = experiment.load(SA_VS_CNN, TINY)
    exp["sites"]["seeds"] = {"fixed": [1, 2], "gated": [3, 4]}
    df = _rows(0.05, 0.0, 0.02, seed=3)
    got = experiment.pilot_sd(exp, df)["gated"]["H1"]
    a, b = experiment._pair(df, "gated", "surround", "ff_sa_cnn", "ff_cnn", "corr")
    assert got["n_surround"] == 6 and got["sd_surround"] == pytest.approx(np.std(a - b, ddof=1))


# --------------------------------------------------------------------------- config
def test_plan_sizes_the_study_without_running(tmp_path, capsys):
    out = tmp_path / "never"
    assert experiment.main([str(SA_VS_CNN), "--out", str(out), "--plan", "--rate", "1000"]) == 0
    got = json.loads(capsys.readouterr().out)
    exp = experiment.load(SA_VS_CNN)
    s = exp["sites"]
    n_units = sum(len(v) for v in s["seeds"].values())
    want = n_units * s["neurons"] * s["train"] * exp["train"]["epochs"] * len(exp["models"])
    assert got["train_neuron_images"] == want and got["units"] == len(exp["unit_order"]) == n_units
    assert got["training_hours"] == pytest.approx(want / 1000 / 3600, abs=0.01)
    assert not out.exists()


def test_shipped_studies_are_preregistered_and_sealed():
    """Both shipped designs: dated, the confirmatory family, val-only training reports,
    seeds distinct across the whole study (no shared control neurons)."""
    for path in (SA_VS_CNN, SA_VS_CNN_GPU):
        exp = experiment.load(path)
        assert exp["preregistered"].startswith("2026-12-05")
        assert [(h["id"], h["contrast"], h["metric"]) for h in exp["hypotheses"]] == [
            ("H1", "did", "corr"), ("H2", "surround", "causal_fve")]
        assert exp["eval"]["report_splits"] == ["val"] and exp["eval"]["selection_split"] == "val"
        seeds = [x for v in exp["sites"]["seeds"].values() for x in v]
        assert len(seeds) == len(set(seeds)) and set(exp["sites"]["surround_models"]) == {"fixed", "gated"}


@pytest.mark.parametrize("item, message", [
    ("sitee.neurons=3", "unknown key 'sitee'"),
    ("sites.neuron=3", "unknown key 'sites.neuron'"),
    ("train.epoch=3", "unknown key 'train.epoch'"),
    ("models=[ff_cnn, nope]", "unknown model 'nope'"),
    ("sites.surround_models=[fixed, flexible]", "sites.surround_models"),
    ("sites.seeds={fixed: [1], gated: [1]}", "distinct across the whole study"),
    ("sites.seeds=[1, 2]", "must map each surround model"),
    ("unit_order=[gated_seed1]", "unit_order must list every unit once"),
    ("sites.surround_fraction=1.0", "both groups"),
    ("statistics.wilcoxon_zero_method=wilcox", "zsplit"),
    ("statistics.correction=bonferroni", "holm"),
    ("hypotheses=[]", "hypotheses"),
    ("hypotheses=[{id: H1, model: ff_sa_cnn, baseline: rf_cnn, metric: corr, contrast: did, "
     "direction: greater}]", "baseline"),
    ("hypotheses=[{id: H1, model: ff_sa_cnn, baseline: ff_cnn, metric: corr, contrast: did, "
     "direction: up}]", "direction"),
    ("hypotheses=[{id: H1, model: ff_sa_cnn, baseline: ff_cnn, metric: causal_fve, "
     "contrast: did, direction: greater}]", "not defined for controls"),
    ("hypotheses=[{model: ff_sa_cnn, baseline: ff_cnn, group: surround, metric: corr}]", "exactly"),
    ("eval.report_splits=[val, test]", "sealed"),
    ("eval.selection_split=test", "selection_split"),
    ("sites.gate_width=0.5", "the simulator's is 0.25"),
])
def test_bad_keys_are_one_line_errors(tmp_path, capsys, item, message):
    argv = _argv(tmp_path / "x", tmp_path / "r", sets=TINY + [item])
    assert experiment.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists() and not (tmp_path / "r").exists()


def test_bad_flags_are_one_line_errors(tmp_path, capsys):
    for extra, message in ((["--time-limit-s", "0"], "--time-limit-s"),
                           (["--allow-mixed-code"], "only with --final")):
        assert experiment.main(_argv(tmp_path / "x", tmp_path / "r", *extra)) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert experiment.main([str(SA_VS_CNN), "--out", str(tmp_path / "x")]) == 2
    assert "--results: required" in capsys.readouterr().err


def test_out_that_is_not_an_experiment_is_never_written_or_deleted(tmp_path, capsys):
    def error(out, *extra):
        assert experiment.main(_argv(out, tmp_path / "r", *extra)) == 2
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


def test_power_analytic_agrees_with_simulating_the_study_tests():
    """power.py's normal approximation against the study's own tests on simulated data."""
    from studies.sa_vs_cnn import power

    for contrast, n_s, n_c in (("surround", 20, 0), ("did", 18, 18)):
        a = power.analytic_power(contrast, 0.03, 0.05, 0.05, n_s, n_c, 0.0125)
        s = power.simulated_power(contrast, 0.03, 0.05, 0.05, n_s, n_c, 0.0125, draws=150)
        assert 0.15 < a < 0.95 and abs(a - s) < 0.12
    assert power.analytic_power("did", 0.03, 0.05, 0.05, 18, 18, 0.0125) < \
        power.analytic_power("surround", 0.03, 0.05, 0.05, 18, 18, 0.0125)   # two groups' noise


def test_power_reads_pilot_records(tmp_path):
    """The pilot's s.d. per hypothesis from unit records (the larger of the surround
    models'), and a power row per design."""
    from studies.sa_vs_cnn import power

    exp = experiment.load(SA_VS_CNN, TINY)
    df = _rows(0.05, 0.0, 0.02, seed=4)
    results = tmp_path / "pilot"
    results.mkdir()
    want = []
    for unit, sm, src in (("gated_seed1", "gated", "gated_seed3"), ("fixed_seed0", "fixed", "fixed_seed1")):
        sel = df[df["unit"] == src].assign(unit=unit)
        (results / f"{unit}.json").write_text(json.dumps({"unit": unit, "rows": sel.to_dict("records")}))
        a, b = experiment._pair(sel, sm, "surround", "ff_sa_cnn", "ff_cnn", "corr")
        want.append(np.std(a - b, ddof=1))
    sd, units = power.pilot_sd(exp, results)
    assert units == ["fixed_seed0", "gated_seed1"] and sd["H1"]["n_surround"] == 6
    assert sd["H1"]["sd_surround"] == pytest.approx(max(want))
    table = power.power_table(exp, sd, power.DEFAULT_EFFECTS, [2, 4], 12, [0.5], draws=0)
    assert table["family_size"] == 4 and table["alpha_per_test"] == pytest.approx(0.0125)
    h1 = [r["H1_analytic"] for r in table["rows"]]
    assert h1[0] < h1[1] and [r["n_surround"] for r in table["rows"]] == [12, 24]
