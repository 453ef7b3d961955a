"""tfsacnn.insilico: stimuli, the twin's forward paths, the experiments on the simulator
(whose parameters are the independent reference), truth recovery, CLI and bad input."""
import json
import types

import numpy as np
import pytest
import yaml

from tests.conftest import randomize_statistics
from tfsacnn import models
from tfsacnn import runs as runs_lib
from tfsacnn.errors import TfsacnnError
from tfsacnn.insilico import experiments as ex
from tfsacnn.insilico import run as insilico_run
from tfsacnn.insilico import forward, stimuli, truth as itruth

SMALL = dict(channels=4, dropout=0.0, seed=0)
# a cheap protocol for the model tests (the simulator tests use the defaults)
FAST = {"grating": {"orientations": 4, "sfs": 3, "phases": 2, "scan_radius": 4.0,
                    "scan_step": 4.0},
        "orientation_tuning": {"orientations": 6}, "sf_tuning": {"sfs": 3},
        "size": {"diameters": 12}, "contrast_surround": {"surround_phases": 2},
        "mei": {"steps": 6, "seeds": 1}}


# --------------------------------------------------------------------- stimuli
@pytest.mark.parametrize("kx,ky,phase", [(5, 0, 0.3), (0, 7, -1.2), (4, 4, 2.0), (6, -3, 0.0)])
def test_grating_parameters_recovered_from_pixels_by_fft(kx, ky, phase):
    size, cx, cy = 64, 20.0, 37.0
    theta = np.arctan2(ky, kx)
    sf = np.hypot(kx, ky) / size
    img = stimuli.grating((size, size), 0.5, 0.25, cx, cy, theta, sf, phase)[0]
    spec = np.fft.fft2(img - img.mean())
    spec[:, size // 2 + 1:] = 0                     # one of the two symmetric peaks
    iy, ix = np.unravel_index(np.abs(spec).argmax(), spec.shape)
    fy, fx = np.fft.fftfreq(size)[iy], np.fft.fftfreq(size)[ix]
    assert np.hypot(fx, fy) == pytest.approx(sf, abs=1e-9)
    got_theta = np.arctan2(fy, fx)
    assert np.cos(got_theta - theta) == pytest.approx(1.0, abs=1e-9)   # same direction
    # FFT phase at the peak = phase - 2 pi (f . centre); amplitude = A N^2 / 2
    got_phase = np.angle(spec[iy, ix]) + 2 * np.pi * (fx * cx + fy * cy)
    assert np.cos(got_phase - phase) == pytest.approx(1.0, abs=1e-5)
    assert np.abs(spec[iy, ix]) == pytest.approx(0.25 * size * size / 2, rel=1e-4)


def test_disc_and_annulus_areas_and_background():
    d = stimuli.disc((60, 60), 30, 30, 20)[0]
    assert d.sum() == pytest.approx(np.pi * 100, rel=0.02)
    a = stimuli.annulus((60, 60), 30, 30, 10, 30)[0]
    assert a.sum() == pytest.approx(np.pi * (225 - 25), rel=0.03)
    img = stimuli.grating((60, 60), 0.4, 0.2, 30, 30, 0.0, 0.1, 0.0, diameter=10)[0]
    assert img[0, 0] == pytest.approx(0.4) and img[30, 30] == pytest.approx(0.6)
    assert img.max() <= 0.6 + 1e-6 and img.min() >= 0.2 - 1e-6
    assert stimuli.amplitude(0.4, (0.0, 1.0), 0.5) == pytest.approx(0.2)


# --------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("crop,standardize", [(None, False), (40, True), (0.8, False)])
def test_pipeline_is_data_preps_preprocessing(crop, standardize):
    from data_prep.preprocess import preprocess_image

    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 255, (2, 73, 61)).astype(np.float32)
    recipe = {"size": 50, "crop": crop, "luma": [0.299, 0.587, 0.114], "pixel_max": 255.0,
              "mean": 0.4 if standardize else None, "std": 0.2 if standardize else None}
    pipe = forward.Pipeline(recipe, (73, 61), 50)
    got = np.asarray(pipe(raw))[..., 0]
    want = np.stack([preprocess_image(x, 50, crop) for x in raw]) / np.float32(255)
    if standardize:
        want = (want - 0.4) / 0.2
    np.testing.assert_allclose(got, want, atol=2e-5)


# --------------------------------------------------------------------- the simulator
@pytest.fixture(scope="module")
def sim():
    """Six simulated neurons (3 with a surround), their parameters and a fake twin that
    gives the stimulus space (50x50, grey, [0, 1], the val images)."""
    from data_prep.synthesize import generate_site

    site = generate_site(neurons=6, train=20, val=300, repeats=1, seed=3,
                         surround_fraction=0.5)
    params, images = site["params"], site["splits"]["val"]["images"]
    tr = forward.Truth(params, lambda x: x, site["noise_free"]["val"].max(0),
                       dataset_images=images)
    space = types.SimpleNamespace(
        image_shape=(50, 50), mean_grey=float(images.mean()), pixel_range=(0.0, 1.0), n=6,
        pipeline=types.SimpleNamespace(visible=(0, 0, 50), size=50), dataset_images=images)
    on = ex.run_experiments(space, tr, label="truth")
    off = ex.run_experiments(space, tr.without_context(), label="off")
    return params, on, off


def test_simulator_without_context_has_no_surround_effects(sim):
    _, _, off = sim
    np.testing.assert_allclose(off["size"]["per_neuron"]["ssi"], 0.0, atol=0.02)
    c = off["contrast_surround"]["per_neuron"]
    np.testing.assert_allclose(c["r_iso"], c["r_cross"], rtol=0.02, atol=1e-6)
    np.testing.assert_allclose(c["cmi"], 0.0, atol=0.02)


def test_simulators_true_ssi_is_larger_for_surround_neurons(sim):
    params, on, _ = sim
    ssi = on["size"]["per_neuron"]["ssi"]
    has = params["has_surround"]
    assert ssi[has].min() > 0.1 and np.nanmax(ssi[~has]) < 0.02
    sup = on["contrast_surround"]["per_neuron"]
    assert (sup["suppression_iso"][has] > sup["suppression_cross"][has]).all()  # iso > cross


def test_experiments_recover_the_simulators_parameters(sim):
    params, on, _ = sim
    g = on["grating"]["per_neuron"]
    err = itruth.circular_error_deg(g["pref_orientation_deg"], np.degrees(params["theta"]))
    assert err.max() < 8, err
    dist = np.hypot(g["centre_x"] - params["x0"], g["centre_y"] - params["y0"])
    assert np.median(dist) < 1.5, dist
    octaves = np.abs(np.log2(g["pref_sf"] / params["sf"]))
    assert octaves.max() < 0.75, octaves
    # the truth against itself recovers perfectly
    rec = itruth.recovery(on, on, params["has_surround"])
    assert rec["orientation_error_deg"] == 0 and rec["rf_centre_error_px"] == 0
    assert rec["corr_ssi"] == pytest.approx(1.0)


def test_size_measures_follow_brain_scores_definitions():
    d = np.array([1, 2, 4, 8, 16, 32, 64], float)
    curve = np.array([[0.1, 0.5, 0.96, 1.0, 0.6, 0.41, 0.4],       # suppressed
                      [0.1, 0.5, 0.9, 1.0, 1.0, 1.0, 1.0],         # no surround
                      [-0.1, -0.2, -0.1, -0.3, -0.1, -0.2, -0.4]]).T  # never positive
    ssi, gsf, sur = ex.size_measures(d, curve)
    assert ssi[0] == pytest.approx(0.6) and gsf[0] == 4 and sur[0] == 32   # 0.41 <= 0.42
    assert ssi[1] == 0 and gsf[1] == 8 and np.isnan(sur[1])
    assert np.isnan(ssi[2]) and np.isnan(gsf[2])


def test_preferred_orientation_and_circular_error():
    th = np.arange(16) * np.pi / 16
    curve = np.exp(2 * np.cos(2 * (th[:, None] - np.radians([30.0, 170.0]))))
    pref, osi = ex.preferred_orientation(th, curve)
    np.testing.assert_allclose(np.degrees(pref), [30, 170], atol=1e-6)
    assert (osi > 0.5).all()
    np.testing.assert_allclose(itruth.circular_error_deg([5, 170, 90], [175, 10, 0]),
                               [10, 20, 90])


# --------------------------------------------------------------------- twin and CLI
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from data_prep.synthesize import synthesize

    return synthesize(tmp_path_factory.mktemp("site") / "site", neurons=3, train=10, val=40,
                      repeats=2, seed=1, surround_fraction=0.7, progress=False)


def make_run(root, site, core, name="ff_sa_cnn", neurons=(0, 1, 2), data=True):
    m = models.build(name, n_neurons=len(neurons), core=core, **SMALL)
    randomize_statistics(m)
    run = root / f"{name}_{core}"
    run.mkdir(parents=True)
    m.save(run / "model.keras")
    entry = {"dir": str(site), "manifest_sha256": runs_lib.manifest_sha256(site)} if data else {}
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": name, "core": core},
                                                     "data": entry}))
    (run / "metrics.json").write_text(json.dumps({"model": name, "neurons": list(neurons),
                                                  "data": entry}))
    return run, m


@pytest.fixture(scope="module")
def runs(site, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {core: make_run(root, site, core) for core in ("independent", "shared")}


@pytest.mark.parametrize("core", ["independent", "shared"])
def test_predict_own_is_each_neuron_on_its_own_image(runs, core):
    run, model = runs[core]
    twin = forward.load_twin(run)
    rng = np.random.default_rng(0)
    own = rng.uniform(0, 1, (5, 3, 50, 50)).astype(np.float32)
    want = np.stack([np.asarray(model(own[:, j, :, :, None], training=False))[:, j]
                     for j in range(3)], 1)
    np.testing.assert_allclose(twin.predict_own(own), want, atol=1e-5)
    np.testing.assert_allclose(twin.predict(own[:, 0]),
                               np.asarray(model(own[:, 0, :, :, None], training=False)),
                               atol=1e-5)
    sub = forward.load_twin(run, neurons="2,0")          # a cut-down model, same numbers
    np.testing.assert_allclose(sub.predict_own(own[:, [2, 0]]), want[:, [2, 0]], atol=1e-5)
    assert sub.model.output_shape[-1] == 2 and list(sub.neurons) == [2, 0]
    assert twin.truth is not None and twin.truth.n == 3
    assert twin.norm > 0 and 0 < twin.mean_grey < 1 and twin.pixel_range == (0.0, 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("core", ["independent", "shared"])
def test_cli_writes_model_and_truth_results(runs, core, tmp_path, capsys):
    from tfsacnn.cli import main as cli

    run, _ = runs[core]
    settings = tmp_path / "s.yaml"
    settings.write_text(yaml.safe_dump(FAST))
    out, tb = tmp_path / "out", tmp_path / "tb"
    assert cli.main(["insilico", "--run", str(run), "--out", str(out), "--settings",
                     str(settings), "--tensorboard", str(tb), "--quiet"]) == 0
    res = json.loads((out / "insilico.json").read_text())
    assert res["experiments"] == ["rf", "grating", "size", "contrast_surround", "mei",
                                  "surround_mei"]
    assert res["core"] == core and res["settings"]["grating"]["orientations"] == 4
    for exp in res["experiments"]:
        assert set(res["truth"][exp]["per_neuron"]) <= set(res["model"][exp]["per_neuron"])
        assert res["truth"][exp]["per_neuron"], exp
    assert "corr_ssi" in res["recovery"] and "orientation_error_deg" in res["recovery"]
    rows = (out / "neurons.csv").read_text().splitlines()
    assert len(rows) == 4 and "truth_ssi" in rows[0] and "model_cmi" in rows[0]
    for f in res["files"]:
        assert (out / f).is_file()
    assert (out / "size_tuning_p01.png").read_bytes()[:4] == b"\x89PNG"
    # MEIs: the grids, and the closed loop (the true neurons shown the model's MEIs)
    for name in ("mei_p01.png", "surround_mei_p01.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "truth_mei_relative" in rows[0] and "model_surround_raise_response" in rows[0]
    assert 0 <= res["recovery"]["closed_loop_fraction_above_1"] <= 1
    assert np.load(out / "curves.npz")["model/mei/mei"].shape == (3, 50, 50)
    assert list(tb.glob("events.out.tfevents.*"))


def test_another_dataset_is_written_apart_from_the_runs_own(runs, site, tmp_path):
    """--data naming another dataset: results go to RUN/insilico_<dataset>, never into
    RUN/insilico (the run's own data's results)."""
    import shutil

    src, _ = runs["independent"]
    run = shutil.copytree(src, tmp_path / "run")
    other = shutil.copytree(site, tmp_path / "other")
    m = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**m, "rebuilt": True}))
    res = insilico_run.insilico(run, data_dir=other, experiments="rf", log=lambda *a: None)
    assert res["data"] == str(other)
    assert (run / "insilico_other" / "insilico.json").is_file()
    assert not (run / "insilico").exists()
    res = insilico_run.insilico(run, experiments="rf", log=lambda *a: None)
    assert res["data"] == str(site) and (run / "insilico" / "insilico.json").is_file()


def test_a_killed_writers_temporaries_are_removed_and_none_are_left(runs, tmp_path):
    """Files are written through temporaries named as every writer names them, so the next
    insilico into the same folder removes those of a killed process."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(proc.stdout)                              # a process that has ended
    out = tmp_path / "o"
    out.mkdir()
    stale = [out / f"insilico.json.tmp-{dead}-0a1b2c3d", out / f"curves.npz.tmp-{dead}-12345678"]
    for p in stale:
        p.write_bytes(b"partial")
    run, _ = runs["independent"]
    insilico_run.insilico(run, experiments="rf", out=out, log=lambda *a: None)
    assert not any(p.exists() for p in stale)
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
    assert (out / "curves.npz").is_file() and np.load(out / "curves.npz").files


def test_bad_input_is_one_line(runs, site, tmp_path, capsys):
    from tfsacnn.cli import main as cli

    run, _ = runs["independent"]
    nodata, _ = make_run(tmp_path / "a", site, "independent", data=False)
    two, _ = make_run(tmp_path / "b", site, "independent", neurons=(0, 1))
    cases = [(["--run", str(nodata)], "pass --data DIR"),
             (["--run", str(two), "--neurons", "2"], "not one the run was trained on"),
             (["--run", str(run), "--experiments", "rf,bogus"], "unknown experiment 'bogus'"),
             (["--run", str(tmp_path / "none")], "no such run directory")]
    for argv, words in cases:
        capsys.readouterr()
        assert cli.main(["insilico", *argv, "--out", str(tmp_path / "o")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and words in err, err
    with pytest.raises(forward.InsilicoError, match="unknown key"):
        ex.merge_settings({"size": {"diameter": 3}})


@pytest.mark.parametrize("override, words", [
    ({"size": {"diameters": -3}}, "size.diameters must be an integer >= 2, got -3"),
    ({"size": {"diameters": 1}}, "size.diameters must be an integer >= 2"),
    ({"size": {"diameters": float("nan")}}, "size.diameters must be an integer"),
    ({"size": {"diameters": True}}, "size.diameters must be an integer"),
    ({"contrast": 2.5}, "contrast must be a number in (0, 1]"),
    ({"contrast": 0}, "contrast must be a number in (0, 1]"),
    ({"rf": {"level": 1.0}}, "rf.level must be a number in [0, 1)"),
    ({"grating": {"sf_range": [0.1, 0.9]}}, "grating.sf_range must be [low, high]"),
    ({"grating": {"sf_range": [0.3, 0.1]}}, "grating.sf_range must be [low, high]"),
    ({"grating": {"scan_step": 0}}, "grating.scan_step must be a number > 0"),
    ({"grating": {"phases": "4"}}, "grating.phases must be an integer >= 1, got '4'"),
    ({"contrast_surround": {"gap": -1}}, "contrast_surround.gap must be a number >= 0"),
    ({"batch": 0}, "batch must be an integer >= 1"),
    ({"mei": {"steps": 0}}, "mei: steps must be an integer >= 1"),
    ({"mei": {"surround_disc": "x"}}, "surround_disc must be 'gsf' or 'crf'"),
])
def test_settings_out_of_range_are_refused_before_any_work(override, words):
    import re

    with pytest.raises(TfsacnnError, match=re.escape(words)):
        ex.merge_settings(override)
    ex.merge_settings()                                   # the defaults pass


@pytest.mark.parametrize("flag", ["--out", "--tensorboard"])
def test_a_directory_below_a_file_is_refused_before_any_work(runs, tmp_path, capsys,
                                                             monkeypatch, flag):
    from tfsacnn.cli import main as cli

    def no_work(*a, **k):
        raise AssertionError("the work started")

    monkeypatch.setattr(insilico_run, "load_twin", no_work)
    run, _ = runs["independent"]
    (tmp_path / "afile").write_text("mine")
    argv = ["insilico", "--run", str(run), "--out", str(tmp_path / "o"),
            flag, str(tmp_path / "afile" / "x")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {flag} {tmp_path / 'afile' / 'x'}: cannot be created "
                   f"({tmp_path / 'afile'} is a file)")
    assert (tmp_path / "afile").read_text() == "mine"


def test_cli_refuses_a_bad_setting_in_one_line(runs, tmp_path, capsys):
    from tfsacnn.cli import main as cli

    run, _ = runs["independent"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("size: {diameters: -3}\n")
    assert cli.main(["insilico", "--run", str(run), "--settings", str(bad),
                     "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: settings: size.diameters must be an integer >= 2, got -3", err
    assert not (tmp_path / "o").exists()


def _fake_result(path, truth_pn, model_pn, neurons):
    path.mkdir(parents=True)
    res = {"data": "/site", "neurons": neurons, "model_name": path.name,
           "model": {e: {"per_neuron": v} for e, v in model_pn.items()},
           "truth": {"has_surround": [True] * len(neurons),
                     **{e: {"per_neuron": v} for e, v in truth_pn.items()}}}
    (path / "insilico.json").write_text(json.dumps(res))
    return path


def test_compare_pairs_neurons_and_finds_the_run_closer_to_the_truth(tmp_path, capsys):
    from tfsacnn.insilico import compare

    rng = np.random.default_rng(0)
    n = 30
    t = {"grating": {"pref_orientation_deg": rng.uniform(0, 180, n).tolist(),
                     "centre_x": rng.normal(25, 2, n).tolist(),
                     "centre_y": rng.normal(25, 2, n).tolist(),
                     "pref_sf": rng.uniform(0.1, 0.3, n).tolist()},
         "size": {"ssi": rng.uniform(0, 0.8, n).tolist()},
         "contrast_surround": {"cmi": rng.uniform(-0.2, 0.5, n).tolist()}}

    def noisy(sd):
        return {e: {q: (np.asarray(v) + rng.normal(0, sd * np.std(v), n)).tolist()
                    for q, v in d.items()} for e, d in t.items()}

    good = _fake_result(tmp_path / "good", t, noisy(0.05), list(range(n)))
    # the bad run lists its neurons in another order and one extra: pairing is by index
    order = list(range(n))[::-1]
    bad_model = {e: {q: list(np.asarray(v)[order]) + [0.0] for q, v in d.items()}
                 for e, d in noisy(0.8).items()}
    bad_truth = {e: {q: list(np.asarray(v)[order]) + [0.0] for q, v in d.items()}
                 for e, d in t.items()}
    bad = _fake_result(tmp_path / "bad", bad_truth, bad_model, order + [99])
    out = tmp_path / "cmp"
    assert compare.main([str(bad), str(good), "--baseline", str(bad), "--out", str(out),
                         "--draws", "300"]) == 0
    res = json.loads((out / "compare.json").read_text())
    assert res["neurons"] == list(range(n))
    v = res["versus_baseline"][str(good)]
    for k in ("orientation_error_deg", "rf_centre_error_px", "ssi_error", "cmi_error"):
        assert v[k]["ci95"][1] < 0 and v[k]["fraction_closer"] > 0.7, (k, v[k])
    assert v["corr_ssi"]["difference"] > 0 and v["corr_ssi"]["ci95"][0] > 0
    assert "orientation_error_deg" in capsys.readouterr().out
    assert compare.main([str(good), str(tmp_path / "nothing")]) == 2
    assert "no insilico.json" in capsys.readouterr().err
