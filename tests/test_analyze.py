"""tfsacnn.analyze and tfsacnn.evaluation.plots: decomposition, attention rows, CLI outputs, TensorBoard."""
import json

import numpy as np
import pytest

from tests.conftest import randomize_statistics
import yaml

from tfsacnn import models
from tfsacnn.evaluation import analyze, plots

N_NEURONS = 3
N_VAL = 20
SMALL = dict(channels=4, dropout=0.0, seed=0)   # tiny networks: the suite must stay fast


def _randomize(model, seed=0):
    """Non-trivial BatchNorm statistics and SA gamma, so every path matters."""
    randomize_statistics(model, seed)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from data_prep.writer import write_dataset

    rng = np.random.default_rng(0)
    splits = {s: {"images": rng.normal(size=(n, 50, 50)).astype("float32"),
                  "responses": rng.gamma(0.5, 0.2, size=(n, N_NEURONS)).astype("float32")}
              for s, n in (("train", 4), ("val", N_VAL))}
    return write_dataset(tmp_path_factory.mktemp("data") / "site", splits, progress=False)


def _make_run(root, name, data_dir, neurons=tuple(range(N_NEURONS)), **overrides):
    from tfsacnn.runs import manifest_sha256

    model = models.build(name, n_neurons=len(neurons), **{**SMALL, **overrides})
    _randomize(model)
    run = root / name
    run.mkdir(parents=True)
    model.save(run / "model.keras")
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"name": name, "core": "independent", "overrides": SMALL},
         "data": {"dir": str(data_dir), "manifest_sha256": manifest_sha256(data_dir)}}))
    (run / "metrics.json").write_text(json.dumps(
        {"model": name, "neurons": list(neurons), "data": {"dir": str(data_dir)}}))
    return run, model


@pytest.fixture(scope="module")
def runs(site, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {name: _make_run(root, name, site)
            for name in ("ff_sa_cnn", "ff_sa_cnn_star_fc1", "rf_cnn")}


def _images(b=7, seed=1):
    return np.random.default_rng(seed).normal(size=(b, 50, 50, 1)).astype("float32")


@pytest.mark.parametrize("name,parts", [("ff_sa_cnn", {"center", "surround", "bias"}),
                                        ("ff_sa_cnn_star_fc1",
                                         {"center_branch", "surround_branch", "bias"}),
                                        ("rf_cnn", {"center", "bias"})])
def test_decomposition_parts_sum_to_model_output(runs, name, parts):
    _, model = runs[name]
    x = _images()
    expected = np.asarray(model(x, training=False))
    fw = analyze.forward(model, x, batch_size=3)                  # batches of 3, 3, 1
    assert set(fw["parts"]) == parts
    total = np.sum(list(fw["parts"].values()), axis=0)
    np.testing.assert_allclose(total, expected, atol=1e-5)
    np.testing.assert_allclose(fw["prediction"], expected, atol=1e-5)
    assert np.abs(fw["parts"]["bias"] - fw["parts"]["bias"][0]).max() == 0   # constant


def test_attention_rows_sum_to_one_and_upsample_to_image_size(runs):
    _, model = runs["ff_sa_cnn"]
    x = _images()
    rows = analyze.center_attention(model, x)
    assert rows.shape == (7, N_NEURONS, 1, 81)
    np.testing.assert_allclose(rows.sum(-1), 1.0, atol=1e-5)
    # the one-pass forward collects the same rows for the requested (image, neuron) pairs
    pick = np.array([[6, 0], [2, 5], [1, 1]])
    fw = analyze.forward(model, x, batch_size=4, attention_images=pick,
                         attention_columns=[0, 1, 2])
    assert fw["map_shape"] == (9, 9)
    for a in range(3):
        for b in range(2):
            np.testing.assert_allclose(fw["attention"][a, b], rows[pick[a, b], a], atol=1e-6)
    maps = plots.upsample_map(rows.mean(2).reshape(7, N_NEURONS, 9, 9), 50)
    assert maps.shape == (7, N_NEURONS, 50, 50)
    np.testing.assert_allclose(plots.upsample_map(np.full((9, 9), 0.3), 50), 0.3)
    assert (maps >= 0).all()


def test_attention_selectivity_is_one_for_uniform_and_zero_for_one_key():
    uniform = analyze.attention_selectivity(np.full((2, 3, 81), 1 / 81))
    assert uniform["entropy_over_uniform"] == pytest.approx(1.0, abs=1e-12)
    assert uniform["max_weight"] == pytest.approx(1 / 81, abs=1e-12)
    one = analyze.attention_selectivity(np.eye(81)[[4, 40]])
    assert one["entropy_over_uniform"] == 0.0 and one["max_weight"] == 1.0


def test_population_average_normalises_by_real_peak():
    y = np.array([[1.0, 4.0], [3.0, 2.0], [2.0, 0.0]])
    (real, pred), used = plots.population_average(y, y / 2)
    assert used == 2
    np.testing.assert_allclose(real, [1.0, (2 / 3 + 0.5) / 2, (1 / 3 + 0) / 2])
    np.testing.assert_allclose(pred, real / 2)
    png = plots.figure_to_png(plots.tuning_curve_figure(y, y / 2, ["a", "b"]))
    img = plots.png_to_tf_image(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and img.dtype == np.uint8
    assert img.ndim == 4 and img.shape[0] == 1 and img.shape[-1] == 4


def _tensorboard_tags(logdir):
    import tensorflow as tf

    tags = set()
    for f in logdir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            tags.update(v.tag for v in event.summary.value)
    return tags


def test_cli_sa_fcl_writes_pictures_numbers_and_tensorboard(runs, site, tmp_path, capsys):
    import subprocess

    run, model = runs["ff_sa_cnn"]
    out, tb = tmp_path / "out", tmp_path / "tb"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()                           # a killed analyze's temporaries: removed
    stale = [out / f"decomposition.npz.tmp-{dead.pid}-0a1b2c3d",
             out / f"attention_p01.png.tmp-{dead.pid}-12345678"]
    for f in stale:
        f.write_bytes(b"partial")
    rc = analyze.main(["--run", str(run), "--data", str(site), "--top", "3",
                       "--out", str(out), "--tensorboard", str(tb)])
    assert rc == 0, capsys.readouterr().err
    assert not [f.name for f in out.iterdir() if ".tmp" in f.name]
    pngs = {"tuning_curves_p01", "population_tuning", "decomposition", "attention_p01"}
    for name in pngs:
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    d = np.load(out / "decomposition.npz")
    np.testing.assert_allclose(d["center"] + d["surround"] + d["bias"], d["prediction"],
                               atol=1e-5)
    from tfsacnn.data import load_numpy

    images, y = load_numpy(site, "val")
    np.testing.assert_allclose(d["prediction"], np.asarray(model(images, training=False)),
                               atol=1e-5)
    np.testing.assert_array_equal(d["responses"], y)
    a = np.load(out / "attention.npz")
    assert a["maps"].shape == (N_NEURONS, 3, 50, 50)
    np.testing.assert_allclose(a["center_rows"].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a["image_index"][:, 0], y.argmax(0))   # top image first
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["neurons"] == [0, 1, 2] and summary["notes"] == []
    rows = a["center_rows"].astype("float64")
    entropy = -(rows * np.log(rows)).sum(-1).mean() / np.log(81)
    assert summary["attention"]["entropy_over_uniform"] == pytest.approx(entropy, rel=1e-6)
    assert summary["attention"]["max_weight"] == pytest.approx(rows.max(-1).mean(), rel=1e-6)
    assert _tensorboard_tags(tb) == {f"analyze/{n}" for n in pngs}


def test_cli_fc1_reports_branches_for_selected_neurons(runs, site, tmp_path):
    run, _ = runs["ff_sa_cnn_star_fc1"]
    out = tmp_path / "out"
    assert analyze.main(["--run", str(run), "--data", str(site), "--neurons", "1:3",
                         "--top", "2", "--out", str(out)]) == 0
    for name in ("tuning_curves_p01", "population_tuning", "decomposition", "attention_p01"):
        assert (out / f"{name}.png").is_file()
    d = np.load(out / "decomposition.npz")
    assert list(d["part_names"]) == ["center_branch", "surround_branch", "bias"]
    assert list(d["neurons"]) == [1, 2] and d["prediction"].shape == (N_VAL, 2)
    np.testing.assert_allclose(d["center_branch"] + d["surround_branch"] + d["bias"],
                               d["prediction"], atol=1e-5)


def test_cli_ctl_says_no_surround(runs, site, tmp_path, capsys):
    run, _ = runs["rf_cnn"]
    out = tmp_path / "out"
    # data dir taken from the run's config; no attention for a plain CNN
    assert analyze.main(["--run", str(run), "--neurons", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no surround" in printed and "no self-attention" in printed
    assert (out / "tuning_curves_p01.png").is_file()
    assert not (out / "decomposition.png").exists() and not (out / "attention_p01.png").exists()


def test_cli_errors_are_one_line_exit_2(runs, site, tmp_path, capsys):
    from data_prep.writer import write_dataset

    run, _ = runs["rf_cnn"]
    rng = np.random.default_rng(0)
    other = write_dataset(tmp_path / "two", {"val": {
        "images": rng.normal(size=(4, 50, 50)).astype("float32"),
        "responses": rng.normal(size=(4, 2)).astype("float32")}}, progress=False)
    no_model = tmp_path / "empty_run"
    no_model.mkdir()
    cases = [
        (["--run", str(tmp_path / "nope"), "--data", str(site)], "no such run directory"),
        (["--run", str(no_model), "--data", str(site)], "model.keras: not found"),
        (["--run", str(run), "--data", str(other)], "has 2 neurons"),
        (["--run", str(run), "--data", str(tmp_path)], "manifest.json"),
        (["--run", str(run), "--data", str(site), "--split", "test"], "no split 'test'"),
        (["--run", str(run), "--data", str(site), "--neurons", "7"], "out of range"),
    ]
    for argv, message in cases:
        assert analyze.main(argv + ["--out", str(tmp_path / "o")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and message in err, err


def _one_error_line(capsys):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_tensorboard_path_that_is_a_file_fails_before_writing(runs, site, tmp_path, capsys):
    run, _ = runs["rf_cnn"]
    tb = tmp_path / "tb"
    tb.write_text("a file, not a log directory\n")
    out = tmp_path / "out"
    for logdir in (tb, tb / "sub"):
        rc = analyze.main(["--run", str(run), "--data", str(site), "--out", str(out),
                           "--tensorboard", str(logdir)])
        assert rc == 2
        assert _one_error_line(capsys).startswith(f"error: {tb}: not a directory")
        assert not out.exists()          # nothing written before the error


def test_truncated_model_keras_says_corrupt(runs, site, tmp_path, capsys):
    import shutil

    run, _ = runs["rf_cnn"]
    bad = tmp_path / "bad_run"
    shutil.copytree(run, bad)
    data = (bad / "model.keras").read_bytes()
    (bad / "model.keras").write_bytes(data[: len(data) // 2])
    rc = analyze.main(["--run", str(bad), "--data", str(site), "--out", str(tmp_path / "o")])
    assert rc == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {bad / 'model.keras'}: corrupt or truncated .keras file")
    assert "File not found" not in line


# ---------------------------------------------------------- data_prep.plot_synthetic
def test_plot_synthetic_on_a_non_synthetic_site(site, tmp_path, capsys):
    from data_prep import plot_synthetic

    out = tmp_path / "fig.png"
    with pytest.raises(SystemExit) as e:
        plot_synthetic.main(["--data", str(site), "--out", str(out)])
    assert e.value.code == 2
    assert _one_error_line(capsys) == (f"error: {site}: not a synthetic site "
                                       f"(no ground_truth.npz)")
    assert not out.exists()


def test_plot_synthetic_truncated_real_npy_is_named(tmp_path, capsys):
    from data_prep import plot_synthetic

    real = tmp_path / "real.npy"
    np.save(real, np.zeros((100, 10)))
    real.write_bytes(real.read_bytes()[:500])
    out = tmp_path / "fig.png"
    with pytest.raises(SystemExit) as e:
        plot_synthetic.main(["--real", str(real), "--out", str(out), "--val", "10"])
    assert e.value.code == 2
    assert _one_error_line(capsys).startswith(f"error: {real}: ")
    assert not out.exists()


# --------------------------------------------------------------------------- causal surround test
@pytest.fixture(scope="module")
def neurons_and_images():
    """A tiny gated site in memory (2 surround neurons, 2 controls) and its val images."""
    from data_prep.synthesize import generate_site

    s = generate_site(neurons=4, train=10, val=60, seed=2, surround_fraction=0.5, surround_model="gated")
    return s["params"], s["splits"]["val"]["images"][..., None]


def test_composite_keeps_crf_pixels_exactly_and_the_surround_beyond_the_seam():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 50, 50, 1)).astype("float32"), rng.random((3, 50, 50, 1)).astype("float32")
    w = analyze.crf_weights(50, [24.5, 20.0], [24.5, 27.0], [5.0, 4.2], seam=2.0)
    y, x = np.mgrid[0:50, 0:50]
    for j, (x0, y0, r) in enumerate([(24.5, 24.5, 5.0), (20.0, 27.0, 4.2)]):
        comp = analyze.crf_composite(a, b, w[j])
        dist = np.hypot(x - x0, y - y0)
        inside, beyond = dist <= r, dist >= r + 2.0
        assert comp.dtype == a.dtype and inside.sum() > 40
        assert (comp[:, inside] == a[:, inside]).all()
        assert (comp[:, beyond] == b[:, beyond]).all()
        seam = ~inside & ~beyond
        lo, hi = np.minimum(a, b)[:, seam], np.maximum(a, b)[:, seam]
        assert ((comp[:, seam] >= lo - 1e-6) & (comp[:, seam] <= hi + 1e-6)).all()
    pairs = analyze.swap_pairs(5, 50, seed=0)
    assert pairs.shape == (50, 2) and (pairs[:, 0] != pairs[:, 1]).all() and pairs.max() < 5
    np.testing.assert_array_equal(pairs, analyze.swap_pairs(5, 50, seed=0))


def test_causal_surround_truth_scores_one_and_a_crf_only_model_zero(neurons_and_images):
    from data_prep import v1_model

    params, images = neurons_and_images
    has = params["has_surround"]
    truth = lambda x: v1_model.responses(x[..., 0], params)            # noqa: E731
    res = analyze.causal_surround(truth, images, params, n_pairs=40)
    assert res["model_change"].shape == res["true_change"].shape == (40, 4)
    np.testing.assert_allclose(res["corr"][has], 1.0, atol=1e-9)
    np.testing.assert_allclose(res["slope"][has], 1.0, atol=1e-9)
    assert (res["true_change"][:, ~has] == 0).all()                     # controls: 0 by construction
    assert np.isnan(res["slope"][~has]).all() and (res["change_rms"][~has] == 0).all()
    assert (res["change_rms"][has] > 0.05).all()                        # the swap matters there
    # a model that only sees each CRF disc (here: the controls' own CRF responses for all)
    masks = v1_model.crf_mask(params, 50)
    blind = lambda x: np.einsum("bij,nij->bn", x[..., 0].astype(np.float64), masks)  # noqa: E731
    res = analyze.causal_surround(blind, images, params, n_pairs=40)
    assert (res["model_change"] == 0).all() and (res["change_rms"] == 0).all()
    summary = analyze.causal_summary(res)
    assert summary["surround"]["n"] == 2 and summary["control"]["false_surround"] == 0.0
    assert summary["surround"]["corr"] is None          # a constant change has no correlation
    # a model that reads the whole image gets a false surround on the controls
    whole = lambda x: np.repeat(x[..., 0].mean((1, 2))[:, None], 4, axis=1)  # noqa: E731
    res = analyze.causal_surround(whole, images, params, n_pairs=40)
    assert (res["change_rms"][~has] > 0.1).all()


def test_causal_surround_of_a_scaled_truth_with_a_crf_only_term_has_its_known_slope(
        neurons_and_images):
    """Not the truth fed in as the model: model column 3-j is a_j * truth_j + c_j * (a
    CRF-disc-only term, which a surround swap leaves unchanged) + b_j, so each model change
    is exactly a_j times the true one: slope a_j, corr 1, change_rms a_j rms(true) / sd."""
    from data_prep import v1_model

    params, images = neurons_and_images
    has = params["has_surround"]
    a, c = np.array([0.5, 2.0, 3.0, 0.25]), np.array([1.0, -2.0, 0.5, 3.0])
    masks = v1_model.crf_mask(params, 50)

    def model(x):
        truth = v1_model.responses(x[..., 0], params)
        crf = np.einsum("bij,nij->bn", x[..., 0].astype(np.float64), masks)
        return (a * truth + c * crf + 7.0)[:, ::-1]                   # neuron j -> column 3-j

    res = analyze.causal_surround(model, images, params, n_pairs=40, columns=[3, 2, 1, 0])
    np.testing.assert_allclose(res["model_change"], a * res["true_change"], atol=1e-9)
    np.testing.assert_allclose(res["slope"][has], a[has], rtol=1e-9)
    np.testing.assert_allclose(res["corr"][has], 1.0, atol=1e-9)
    sd = model(images)[:, ::-1].std(0)
    rms = a * np.sqrt((res["true_change"] ** 2).mean(0)) / sd
    np.testing.assert_allclose(res["change_rms"], rms, rtol=1e-9)


def test_surround_score_slope_and_corr_of_a_scaled_noisy_copy():
    rng = np.random.default_rng(3)
    t = rng.normal(size=(500, 2))
    m = 0.5 * t + 0.05 * rng.normal(size=(500, 2))
    sc = analyze.surround_score(m, t, scale=np.ones(2))
    np.testing.assert_allclose(sc["slope"], 0.5, atol=0.02)
    assert (sc["corr"] > 0.98).all() and (sc["corr"] <= 1).all()
    np.testing.assert_allclose(sc["change_rms"], np.sqrt((m ** 2).mean(0)))


def test_cli_causal_surround_on_a_simulated_site(tmp_path, capsys):
    from data_prep.synthesize import synthesize

    site = synthesize(tmp_path / "site", neurons=2, train=10, val=30, repeats=2, seed=1,
                      surround_fraction=0.5, progress=False)
    run, _ = _make_run(tmp_path / "runs", "ff_cnn", site, neurons=(0, 1))
    out = tmp_path / "out"
    assert analyze.main(["--run", str(run), "--out", str(out)]) == 0
    got = json.loads((out / "analysis.json").read_text())["causal_surround"]
    assert got["surround"]["n"] == 1 and got["control"]["n"] == 1
    assert got["control"]["false_surround"] > 0          # ff_cnn reads the whole image
    with np.load(out / "causal_surround.npz") as z:
        assert z["model_change"].shape == (analyze.SURROUND_PAIRS, 2)
        assert (z["true_change"][:, ~z["has_surround"]] == 0).all()
