"""tfsacnn.compare on hand-written run directories (docs/internals.md metrics.json)."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tfsacnn.evaluation import compare as C

SHA = "ab" * 32


def make_run(root, name, corr, pt_j, pt_s, neurons=None, model="ff_cnn", params=46017,
             sha=SHA, data_dir=None, split="val", peaks=None, **extra):
    """Write RUN/metrics.json by hand; None means NaN (written as null).
    peaks: (top_overlap, peak_height) lists, or None for a run scored before they existed."""
    neurons = list(range(len(corr))) if neurons is None else neurons
    run = root / name
    run.mkdir(parents=True)
    m = {
        "model": model, "core": "independent", "trainable_params_per_neuron": params,
        "neurons": neurons, "neuron_ids": [f"n{i:03d}" for i in neurons],
        "data": {"dir": str(data_dir or root / "data"), "manifest_sha256": sha},
        "selection_split": "val",
        "splits": {split: {"n_images": 1000,
                           "per_neuron": {"corr": corr, "pt_j": pt_j, "pt_s": pt_s, "fev": None},
                           "mean": {}}},
        "best_epoch": [1] * len(neurons),
    }
    if peaks is not None:
        m["splits"][split]["per_neuron"].update(top_overlap=peaks[0], peak_height=peaks[1])
    m.update(extra)
    (run / "metrics.json").write_text(json.dumps(m))
    return run


@pytest.fixture
def two_runs(tmp_path):
    a = make_run(tmp_path, "A", corr=[0.1, 0.2, 0.3, 0.4], pt_j=[0.0, 0.1, 0.2, 0.1],
                 pt_s=[0.1, 0.1, 0.3, 0.2])
    b = make_run(tmp_path, "B", corr=[0.2, 0.2, 0.5, None], pt_j=[0.1, 0.1, 0.0, 0.3],
                 pt_s=[0.2, 0.1, 0.4, 0.3], model="ff_sa_cnn", params=41267)
    return a, b


def test_table_values(two_runs):
    a, b = two_runs
    df = C.compare_runs([a, b])
    ra, rb = df.iloc[0], df.iloc[1]
    assert ra["run"] == str(a) and ra["is_baseline"] and not rb["is_baseline"]
    assert (ra["model"], ra["params_per_neuron"], ra["n_neurons"]) == ("ff_cnn", 46017, 4)
    assert (rb["model"], rb["params_per_neuron"], rb["n_neurons"], rb["n_nan"]) == ("ff_sa_cnn", 41267, 4, 1)
    # A corr 0.1..0.4: mean 0.25, sample var = 2*(0.15^2 + 0.05^2)/3 = 0.05/3, sem = sqrt(.05/3)/2
    assert ra["corr"] == pytest.approx(0.25)
    assert ra["corr_sem"] == pytest.approx(np.sqrt(0.05 / 3) / 2)
    # B corr without the NaN: 0.2, 0.2, 0.5 -> mean 0.3, var 0.06/2 = 0.03, sem = sqrt(.03/3) = 0.1
    assert rb["corr"] == pytest.approx(0.3) and rb["corr_sem"] == pytest.approx(0.1)
    # PT in %: A pt_s 10,10,30,20 -> 17.5; B pt_s 20,10,40,30 -> 25; B pt_j 10,10,0,30 -> 12.5
    assert ra["pt_s_pct"] == pytest.approx(17.5) and rb["pt_s_pct"] == pytest.approx(25.0)
    assert rb["pt_j_pct"] == pytest.approx(12.5)
    # pt_j of B: 10,10,0,30 -> dev -2.5,-2.5,-12.5,17.5 -> ss 475, var 475/3, sem sqrt(475/3)/2
    assert rb["pt_j_pct_sem"] == pytest.approx(np.sqrt(475 / 3) / 2)


def test_paired_stats(two_runs):
    a, b = two_runs
    rb = C.compare_runs([a, b]).iloc[1]
    # corr diffs over the 3 neurons where B is not NaN: 0.1, 0, 0.2
    assert rb["corr_diff"] == pytest.approx(0.1)
    assert (rb["corr_n_improved"], rb["corr_n_paired"]) == (2, 3)
    assert rb["corr_p"] == pytest.approx(stats.wilcoxon([0.1, 0.0, 0.2], zero_method="zsplit").pvalue)
    # pt_s diffs (%): 10, 0, 10, 10 -> mean 7.5, 3 improved of 4
    assert rb["pt_s_pct_diff"] == pytest.approx(7.5)
    assert (rb["pt_s_n_improved"], rb["pt_s_n_paired"]) == (3, 4)
    assert rb["pt_s_p"] == pytest.approx(stats.wilcoxon([10.0, 0.0, 10.0, 10.0], zero_method="zsplit").pvalue)
    # pt_j diffs (%): 10, 0, -20, 20 -> mean 2.5, 2 improved
    assert rb["pt_j_pct_diff"] == pytest.approx(2.5) and rb["pt_j_n_improved"] == 2
    assert rb["pt_j_p"] == pytest.approx(stats.wilcoxon([10.0, 0.0, -20.0, 20.0], zero_method="zsplit").pvalue)


def test_paired_larger_sample_matches_scipy(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.6, 60)
    y = x + rng.normal(0.02, 0.05, 60)
    a = make_run(tmp_path, "a", corr=x.tolist(), pt_j=[0.1] * 60, pt_s=[0.1] * 60)
    b = make_run(tmp_path, "b", corr=y.tolist(), pt_j=[0.1] * 60, pt_s=[0.1] * 60)
    rb = C.compare_runs([a, b]).iloc[1]
    assert rb["corr_p"] == pytest.approx(stats.wilcoxon(y - x, zero_method="zsplit").pvalue)
    assert rb["corr_n_improved"] == int(np.sum(y > x))
    assert rb["pt_j_p"] == 1.0 and rb["pt_j_n_improved"] == 0    # all differences zero


def test_paired_keeps_equal_gains_tied():
    # PT_J of the paper-scale surround neurons: in floating point 0.7 - 0.6 and 0.9 - 0.8
    # differ in the last bit, which broke the tied ranks (p 0.331 instead of 0.369)
    base = np.array([0.6, 0.6, 0.5, 0.5, 0.3, 1.0, 0.0, 0.6, 0.8, 0.4, 0.5, 0.6])
    run = np.array([0.7, 0.7, 0.4, 0.9, 0.5, 0.9, 0.7, 0.4, 0.5, 0.6, 0.9, 0.4])
    exact = [1, 1, -1, 4, 2, -1, 7, -2, -3, 2, 4, -2]          # the gains in tenths
    p = stats.wilcoxon(exact, zero_method="zsplit").pvalue
    assert len(set((run - base).tolist())) > len(set(exact))   # the float noise is there
    s = C.paired(run, base)
    assert s["p"] == pytest.approx(p) and p == pytest.approx(0.36865234375)
    assert C.paired(run * 100, base * 100)["p"] == s["p"]        # scale does not matter
    assert (s["n_improved"], s["n_paired"], s["diff"]) == (7, 12, pytest.approx(0.1))


def test_neuron_order_aligned_and_baseline_option(two_runs, tmp_path):
    a, _ = two_runs
    # same neurons, other order: [3, 2, 1, 0] with values reversed = identical to A
    c = make_run(tmp_path, "C", corr=[0.4, 0.3, 0.2, 0.1], pt_j=[0.1, 0.2, 0.1, 0.0],
                 pt_s=[0.2, 0.3, 0.1, 0.1], neurons=[3, 2, 1, 0])
    df = C.compare_runs([c, a], baseline=a)
    assert df["run"].tolist() == [str(a), str(c)]          # baseline moved first
    assert df.iloc[1]["corr_diff"] == 0 and df.iloc[1]["corr_p"] == 1.0
    # a baseline that is not in the list is added as the first row
    df = C.compare_runs([c], baseline=a)
    assert df["run"].tolist() == [str(a), str(c)] and df.iloc[0]["is_baseline"]


def test_neuron_mask(two_runs, tmp_path):
    a, b = two_runs
    mask = np.array([True, False, True, False, False])        # dataset has 5 neurons
    np.save(tmp_path / "mask.npy", mask)
    df = C.compare_runs([a, b], neuron_mask=tmp_path / "mask.npy")
    assert df["n_neurons"].tolist() == [2, 2]
    assert df.iloc[0]["corr"] == pytest.approx(0.2)             # neurons 0, 2 of A: 0.1, 0.3
    assert df.iloc[1]["corr_diff"] == pytest.approx(0.15)        # 0.1, 0.2


def test_group_by_surround(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "ground_truth.npz", has_surround=np.array([0, 1, 1, 0, 0, 1], dtype=bool))
    kw = dict(neurons=[1, 2, 3, 5], data_dir=data)
    a = make_run(tmp_path, "A", corr=[0.1, 0.2, 0.3, 0.4], pt_j=[0] * 4, pt_s=[0] * 4, **kw)
    b = make_run(tmp_path, "B", corr=[0.3, 0.4, 0.3, 0.5], pt_j=[0] * 4, pt_s=[0] * 4, **kw)
    df = C.compare_runs([a, b], group_by_surround=True)
    assert df["group"].tolist() == ["surround", "surround", "control", "control"]
    assert df["n_neurons"].tolist() == [3, 3, 1, 1]
    sur_b, ctl_b = df.iloc[1], df.iloc[3]
    assert sur_b["corr_diff"] == pytest.approx((0.2 + 0.2 + 0.1) / 3) and sur_b["corr_n_improved"] == 3
    assert ctl_b["corr_diff"] == pytest.approx(0.0) and ctl_b["corr_n_improved"] == 0
    md = C.to_markdown(df)
    assert "| surround |" in md and "| control |" in md


def test_cli_outputs(two_runs, tmp_path, capsys):
    a, b = two_runs
    out = tmp_path / "tables" / "table.md"
    assert C.main([str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    md = out.read_text()
    assert "| run | model | params/neuron | neurons | CORR | PT_S % | PT_J % |" in md
    assert "0.300 ± 0.100" in md and "25.0 ±" in md and "baseline" in md
    assert "+0.100 [" in md and "] (2/3, p=" in md and "+7.5 [" in md and "] (3/4, p=" in md
    assert "46,017" in md and "4 (1 NaN)" in md
    assert md.split("\n", 2)[2] in printed                       # same table on stdout
    csv = pd.read_csv(out.with_suffix(".csv"))
    assert csv["run"].tolist() == [str(a), str(b)]
    assert csv.loc[1, "corr"] == pytest.approx(0.3) and csv.loc[1, "pt_s_pct"] == pytest.approx(25.0)
    assert csv.loc[1, "corr_p"] == pytest.approx(stats.wilcoxon([0.1, 0.0, 0.2], zero_method="zsplit").pvalue)


def test_peaks_columns(tmp_path, capsys):
    a = make_run(tmp_path, "A", corr=[0.1, 0.2, 0.3], pt_j=[0.1, 0.2, 0.3], pt_s=[0.2] * 3,
                 peaks=([0.5, 0.6, 0.7], [0.8, 0.9, 1.0]))
    b = make_run(tmp_path, "B", corr=[0.2, 0.2, 0.4], pt_j=[0.2, 0.2, 0.5], pt_s=[0.3] * 3,
                 peaks=([0.5, 0.7, 0.7], [1.0, 0.9, 1.3]), model="ff_sa_cnn")
    assert "top_overlap_pct" not in C.compare_runs([a, b]).columns      # the paper's table
    rb = C.compare_runs([a, b], peaks=True).iloc[1]
    # TOP in %: B 50, 70, 70 -> 63.33; diffs 0, 10, 0 -> 3.33, 1 improved of 3
    assert rb["top_overlap_pct"] == pytest.approx(190 / 3)
    assert rb["top_overlap_pct_diff"] == pytest.approx(10 / 3)
    assert (rb["top_overlap_n_improved"], rb["top_overlap_n_paired"]) == (1, 3)
    # height diffs 0.2, 0, 0.3 -> mean 1/6, 2 improved; Wilcoxon on the same differences
    assert rb["peak_height_diff"] == pytest.approx(0.5 / 3) and rb["peak_height_n_improved"] == 2
    assert rb["peak_height_p"] == pytest.approx(stats.wilcoxon([0.2, 0.0, 0.3], zero_method="zsplit").pvalue)
    out = tmp_path / "t.md"
    assert C.main([str(a), str(b), "--peaks", "--out", str(out)]) == 0
    md = out.read_text()
    assert "| CORR | PT_S % | PT_J % | TOP % | peak height |" in md
    assert "63.3 ±" in md and "] (1/3, p=" in md and "] (2/3, p=" in md
    assert not list(tmp_path.glob("*.tmp"))
    old = make_run(tmp_path, "old", corr=[0.1] * 3, pt_j=[0] * 3, pt_s=[0] * 3)
    assert C.main([str(a), str(old)]) == 0                        # fine without --peaks
    assert C.has_peaks([a, b]) and not C.has_peaks([a, old]) and not C.has_peaks([a], "test")
    _refused([a, old, "--peaks"], capsys, f"error: {old}: metrics.json splits.val.per_neuron "
             "has no 'top_overlap' list", "tfsacnn.evaluate", "--save")


def _refused(argv, capsys, *needles):
    assert C.main([str(x) for x in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for n in needles:
        assert n in err, err
    return err


def test_refusals(two_runs, tmp_path, capsys):
    a, b = two_runs
    other_neurons = make_run(tmp_path, "N", corr=[0.1] * 3, pt_j=[0] * 3, pt_s=[0] * 3)
    _refused([a, other_neurons], capsys, f"error: {other_neurons}: different neuron set")
    other_data = make_run(tmp_path, "D", corr=[0.1] * 4, pt_j=[0] * 4, pt_s=[0] * 4, sha="cd" * 32)
    _refused([a, other_data], capsys, f"error: {other_data}: different dataset")
    missing = tmp_path / "empty"
    missing.mkdir()
    _refused([a, missing], capsys, f"error: {missing}: no metrics.json")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "metrics.json").write_text('{"model": "ff_cnn", ')
    _refused([a, corrupt], capsys, f"error: {corrupt / 'metrics.json'}: not valid JSON")
    _refused([a, b, "--split", "test"], capsys, f"error: {a}: no 'test' split", "has: val")
    short = make_run(tmp_path, "S", corr=[0.1] * 3, pt_j=[0] * 4, pt_s=[0] * 4, neurons=[0, 1, 2, 3])
    _refused([short], capsys, f"error: {short}: splits.val.per_neuron.corr has 3 values for 4 neurons")
    _refused([a, b, "--group-by-surround"], capsys, f"error: {a}: --group-by-surround", "ground_truth.npz")


def test_module_entry_point_exit_codes(two_runs, tmp_path):
    a, b = two_runs
    run = lambda *args: subprocess.run([sys.executable, "-m", "tfsacnn.compare", *map(str, args)],  # noqa: E731
                                       capture_output=True, text=True)
    bad = run(a, tmp_path / "nope")   # one process start (~1 s): main()'s 0 is tested above
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: {tmp_path / 'nope'}: no metrics.json"


def test_paired_keeps_zero_differences_and_gives_a_bootstrap_interval():
    run = np.array([0.0] * 6 + [0.1, 0.2, 0.3, -0.1, 0.2, 0.1, 0.15, 0.25])
    base = np.zeros(len(run))
    s = C.paired(run, base)
    assert s["n_paired"] == 14                        # zeros are not dropped
    assert s["p"] == pytest.approx(stats.wilcoxon(run, zero_method="zsplit").pvalue)
    assert s["p"] > stats.wilcoxon(run).pvalue + 0.005        # scipy's default drops them
    assert s["ci_low"] < s["diff"] < s["ci_high"]
    assert s["ci_low"] >= run.min() and s["ci_high"] <= run.max()
    assert C.bootstrap_ci(run) == C.bootstrap_ci(run)          # a fixed seed
    wide = C.bootstrap_ci(np.concatenate([run, run + 1]))
    assert wide[1] - wide[0] > s["ci_high"] - s["ci_low"]      # more spread, wider
    assert np.isnan(C.bootstrap_ci([0.1])).all()


def test_holm_adjusts_a_family_and_skips_nan():
    p = [0.01, 0.04, np.nan, 0.03, 0.5]
    adj = C.holm(p)
    # m = 4 tests: sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.09, max(0.09, 0.08), min(1, 0.5)
    np.testing.assert_allclose(adj[[0, 3, 1, 4]], [0.04, 0.09, 0.09, 0.5])
    assert np.isnan(adj[2])
    assert (adj >= np.array(p))[~np.isnan(adj)].all()
    assert C.holm([0.9, 0.8])[0] == 1.0                          # capped at 1
