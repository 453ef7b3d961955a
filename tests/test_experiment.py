"""studies.sa_vs_cnn.experiment end to end on a tiny version of studies/sa_vs_cnn/sa_vs_cnn.yaml."""
import json

import pandas as pd
import pytest

from tests.conftest import REPO
from studies.sa_vs_cnn import experiment

SA_VS_CNN = REPO / "studies" / "sa_vs_cnn" / "sa_vs_cnn.yaml"
TINY = ["site.neurons=4", "site.train=200", "site.val=100", "site.test=100", "site.repeats=4",
        "models=[ff_cnn, ff_sa_cnn]", "pairs=[[ff_cnn, ff_sa_cnn]]", "train.epochs=1", "model.overrides={channels: 4}",
        "eval.tuning_curve_neurons=1"]


def _argv(out, *extra):
    return [str(SA_VS_CNN), "--out", str(out), *[x for s in TINY for x in ("--set", s)], *extra]


@pytest.mark.slow
def test_tiny_experiment_end_to_end(tmp_path, capsys):
    out = tmp_path / "exp"
    assert experiment.main(_argv(out)) == 0
    md = (out / "table.md").read_text()
    df = pd.read_csv(out / "table.csv")
    for model in ("ff_cnn", "ff_sa_cnn"):
        assert model in md
        assert (out / "runs" / model / "metrics.json").is_file()
    for group in ("surround", "control"):
        assert group in md
    assert set(df["group"]) == {"surround", "control"}
    assert set(df["model"]) == {"ff_cnn", "ff_sa_cnn"}
    assert (df["split"] == "test").all()
    main = df[df["baseline"] == "ff_cnn"]
    assert main["n_neurons"].sum() == 2 * 4        # every neuron in one group, per model
    assert df["corr_over_nc"].notna().all() and df["mean_corr_i_over_nc_i"].notna().all()
    refs = pd.read_csv(out / "references.csv")
    truth = refs[refs["reference"] == "ground truth"]
    assert ((truth["corr_over_nc"] - 1).abs() < 1e-6).all()   # ground truth reaches the ceiling
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["criterion_surround_ff_sa_cnn_beats_ff_cnn"]) == {"corr", "pt_s", "pt_j"}
    assert "surround/ff_sa_cnn-ff_cnn" in summary["paired"]
    assert "control/ff_cnn-ff_sa_cnn" in summary["paired"]          # the extra pair
    assert {(c["model"], c["baseline"]) for c in summary["surround_vs_control"]} == {
        ("ff_sa_cnn", "ff_cnn"), ("ff_cnn", "ff_sa_cnn")}
    # surround captured: partial r on surround neurons, recomputed here from the saved model
    import keras
    import numpy as np

    from data_prep import v1_model
    from tfsacnn import data as data_lib, metrics

    gt = out / "site" / "ground_truth.npz"
    params = v1_model.load_params(gt)
    images, _ = data_lib.load_numpy(out / "site", "test", verify=False)
    drives = v1_model.drives(images[..., 0].astype("float64"), params)
    has = np.load(gt)["has_surround"].astype(bool)
    capture = {r["model"]: r for r in summary["surround_captured"]}
    assert set(capture) == {"ff_cnn", "ff_sa_cnn"} and "ff_cnn" in capture["ff_sa_cnn"]["vs"]
    assert "ff_sa_cnn" in capture["ff_cnn"]["vs"]                   # the extra pair
    model = keras.saving.load_model(out / "runs" / "ff_sa_cnn" / "model.keras", compile=False)
    expected = metrics.partial_corr(v1_model.combine(drives, params),
                                    model.predict(images, verbose=0).astype("float64"),
                                    v1_model.combine(drives, params, context=False))[has]
    np.testing.assert_allclose(capture["ff_sa_cnn"]["per_neuron"], expected, rtol=1e-4)
    assert "Surround captured" in md
    assert "| TOP % | peak height |" in md and df["top_overlap_pct"].notna().all()
    # studies/sa_vs_cnn/sa_diagnostics.py (the doc's attention diagnostics) on the same run
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(REPO / "studies" / "sa_vs_cnn" / "sa_diagnostics.py"),
                           str(out / "runs" / "ff_sa_cnn"), str(out / "site")],
                          capture_output=True, text=True, check=True)
    diag = json.loads(done.stdout)
    assert 0 < diag["entropy_over_uniform"] <= 1 and 0 <= diag["logit_share_from_centre_content"] <= 1
    run_corr = np.array(json.loads((out / "runs" / "ff_sa_cnn" / "metrics.json").read_text())
                        ["splits"]["test"]["per_neuron"]["corr"])
    assert diag["corr"]["surround"] == pytest.approx(np.nanmean(run_corr[has]), abs=1e-4)
    # studies/sa_vs_cnn/pt_power.py --per-neuron (new images from the site's own neurons) on the same runs
    done = subprocess.run([sys.executable, str(REPO / "studies" / "sa_vs_cnn" / "pt_power.py"), str(out / "site"),
                           str(out / "runs" / "ff_cnn"), str(out / "runs" / "ff_sa_cnn"),
                           "--images", "300", "--per-neuron"],
                          capture_output=True, text=True, check=True)
    power = json.loads(done.stdout)
    rows = power["neurons"]
    assert [r["surround"] for r in rows] == has.tolist() and power["top_k"] == 3
    for r in rows:
        for m in ("PT_J", "PT_S", "CORR", "top_overlap", "peak_height"):
            assert r[f"delta_{m}"] == pytest.approx(r[f"{m}_run"] - r[f"{m}_baseline"], abs=2e-4)
        if not r["surround"]:                    # no surround: the peaks are the CRF's
            assert r["peak_overlap_crf_only"] == 1.0
    for group, sel in (("surround", has), ("control", ~has)):
        for key in ("baseline", "run"):
            assert power[group][key]["PT_J"] == pytest.approx(
                np.mean([r[f"PT_J_{key}"] for r, s in zip(rows, sel) if s]), abs=1e-3)
            assert power["peaks"][f"{group}: top_overlap"][key] == pytest.approx(
                np.mean([r[f"top_overlap_{key}"] for r, s in zip(rows, sel) if s]), abs=1e-3)
    for m in ("top_overlap", "peak_height"):               # no surround: CRF-only = truth
        assert power["peaks"][f"control: {m}"]["noise_free_truth"] == \
            power["peaks"][f"control: {m}"]["crf_only_truth"]
    timings = json.loads((out / "timings.json").read_text())
    assert {"site", "ff_cnn", "ff_sa_cnn"} <= set(timings)
    # a second call reuses the site and the finished runs, and keeps their wall times
    capsys.readouterr()
    assert experiment.main(_argv(out)) == 0
    assert "reusing finished run" in capsys.readouterr().out
    assert json.loads((out / "timings.json").read_text()) == timings
    # a different experiment in the same directory is refused
    assert experiment.main(_argv(out, "--set", "train.epochs=2")) == 2
    assert "different experiment" in capsys.readouterr().err
    # studies/sa_vs_cnn/pt_sample_size.py: the observed pairing is compare's, the power a share of draws
    done = subprocess.run([sys.executable, str(REPO / "studies" / "sa_vs_cnn" / "pt_sample_size.py"),
                           str(out / "runs" / "ff_cnn"), str(out / "runs" / "ff_sa_cnn"),
                           "--n", "4", "8", "--draws", "5"], capture_output=True, text=True, check=True)
    sizes = json.loads(done.stdout)
    assert sizes["surround_neurons"] == int(has.sum()) and set(sizes["power"]) == {"4", "8"}
    for m in ("corr", "pt_s", "pt_j"):
        want = summary["paired"]["surround/ff_sa_cnn-ff_cnn"][m]
        assert sizes["observed"][m]["p"] == pytest.approx(want["p"])
        assert sizes["observed"][m]["n_improved"] == want["n_improved"]
    assert all(v in (0, 0.2, 0.4, 0.6, 0.8, 1.0) for p in sizes["power"].values() for v in p.values())
    # a finished run continued with other settings (fit --resume --set train.epochs=2)
    # no longer matches the experiment: refused, not silently reported as 1 epoch
    from tfsacnn import config as config_lib

    cfg_path = out / "runs" / "ff_cnn" / "config.yaml"
    config_lib.dump(config_lib.load(cfg_path, ["train.epochs=2"]), cfg_path)
    assert experiment.main(_argv(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "runs/ff_cnn: finished with other settings" in err
    assert "train.epochs is 2, the experiment's 1" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_torch_trained_models_are_imported_and_reported(tmp_path, capsys):
    """--torch: scripts/train_torch.py output on the same site arguments is imported,
    scored and reported; another site's training is refused before the run is finished."""
    import numpy as np

    from tests.conftest import train_torch_script

    pytest.importorskip("torch")
    tt = train_torch_script()
    site = dict(neurons=4, train=200, val=100, test=100, repeats=4, surround_fraction=0.5)
    sets = [f"site.{k}={v}" for k, v in site.items()] + [
        "site.seed=3", "models=[ff_cnn, ff_sa_cnn]", "pairs=[]", "train.epochs=2",
        "model.core=independent"]

    def trained(name, seed, models, epochs):
        npz = str(tmp_path / f"{name}.npz")
        tt.write_site(npz, seed=seed, **site)
        for m in models:
            tt.train(npz, m, epochs, str(tmp_path / name / m), lr=0.01, device="cpu",
                     log=lambda msg: None)
        return tmp_path / name

    def argv(out, torch_dir, *extra):
        return [str(SA_VS_CNN), "--out", str(out), *[x for s in [*sets, *extra]
                                                       for x in ("--set", s)],
                "--torch", str(torch_dir)]

    torch_dir = trained("torch", 3, ("ff_cnn", "ff_sa_cnn"), 2)
    assert experiment.main(argv(tmp_path / "exp", torch_dir)) == 0
    for m in ("ff_cnn", "ff_sa_cnn"):
        run = tmp_path / "exp" / "runs" / m
        metrics = json.loads((run / "metrics.json").read_text())
        hist = json.loads((run / "torch_history.json").read_text())
        assert metrics["best_epoch"] == hist["best_epoch"] and set(metrics["splits"]) == {"val", "test"}
        np.testing.assert_allclose(metrics["splits"]["val"]["per_neuron"]["corr"],
                                   hist["best_val_corr"], atol=experiment.TORCH_CORR_TOLERANCE)
    md = (tmp_path / "exp" / "table.md").read_text()
    assert "scripts/train_torch.py" in md and "| TOP % | peak height |" in md
    capsys.readouterr()
    assert experiment.main(argv(tmp_path / "exp", torch_dir)) == 0     # a second call reuses
    assert capsys.readouterr().out.count("reusing finished run") == 2
    other = trained("other", 4, ("ff_cnn",), 1)                 # another site seed
    assert experiment.main(argv(tmp_path / "exp2", other, "models=[ff_cnn]")) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]     # (the site's progress above)
    assert last.startswith(f"error: {other / 'ff_cnn'}: ") and "trained on another site" in last
    assert not (tmp_path / "exp2" / "runs" / "ff_cnn" / "metrics.json").exists()
    assert experiment.main(argv(tmp_path / "exp3", torch_dir, "model.core=shared")) == 2
    assert "--torch" in capsys.readouterr().err and not (tmp_path / "exp3").exists()
    (tmp_path / "empty").mkdir()                            # refused before the site is made
    assert experiment.main(argv(tmp_path / "exp4", tmp_path / "empty")) == 2
    assert "expected one avg_*.pth and history.json" in capsys.readouterr().err
    assert not (tmp_path / "exp4").exists()


@pytest.mark.parametrize("item, message", [
    ("sitee.neurons=3", "unknown key 'sitee'"),
    ("site.neuron=3", "unknown key 'site.neuron'"),
    ("train.epoch=3", "unknown key 'train.epoch'"),
    ("models=[ff_cnn, nope]", "unknown model 'nope'"),
    ("report.split=train", "report.split"),
    ("pairs=[[rf_sa_cnn, rf_cnn], [ff_cnn]]", "pairs"),
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


def test_surround_capture_refuses_an_unloadable_model_in_one_line(tmp_path):
    from tfsacnn.errors import TfsacnnError

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(TfsacnnError, match=r"model\.keras: corrupt or truncated \.keras file") as e:
        experiment.surround_capture({"m": run}, [0], {})
    assert "\n" not in str(e.value)


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
