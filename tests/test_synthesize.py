"""The simulated V1 site: real-like statistics, surround dependence, determinism, CLI.

Run with `pytest -s tests/test_synthesize.py` to see the statistics table.
"""
import subprocess
import sys

import numpy as np
import pytest

from data_prep import stimuli, v1_model
from data_prep.synthesize import REAL_RANGES, response_statistics, statistics_summary, synthesize

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A small site with a 1000-image val set (stable statistics), written to disk."""
    out = tmp_path_factory.mktemp("synth") / "site"
    return synthesize(out, neurons=6, train=200, val=1000, repeats=10, seed=0, progress=False)


@pytest.fixture(scope="module")
def site_val(site):
    from tfsacnn.data import load_numpy
    images, responses, repeats = load_numpy(site, "val", with_repeats=True)
    return images[..., 0], responses, repeats


def test_statistics_match_real_sample(real_sample, site_val):
    _, syn, _ = site_val
    real_s, syn_s = statistics_summary(real_sample), statistics_summary(syn)
    real_n, syn_n = response_statistics(real_sample), response_statistics(syn)
    print(f"\n{'median over neurons':<22}{'real M1S1 (10)':>16}{'synthetic (6)':>15}   required")
    for k, (lo, hi) in REAL_RANGES.items():
        print(f"{k:<22}{real_s[k]:>16.4g}{syn_s[k]:>15.4g}   [{lo:g}, {hi:g}]")
    print(f"{'range over neurons':<22}")
    for k in REAL_RANGES:
        print(f"  {k:<20}{np.nanmin(real_n[k]):>8.3g}-{np.nanmax(real_n[k]):<7.3g}"
              f"{np.nanmin(syn_n[k]):>8.3g}-{np.nanmax(syn_n[k]):<7.3g}")
    for k, (lo, hi) in REAL_RANGES.items():
        assert lo <= real_s[k] <= hi, f"real sample {k} median {real_s[k]} outside [{lo}, {hi}]"
        assert lo <= syn_s[k] <= hi, f"synthetic {k} median {syn_s[k]} outside [{lo}, {hi}]"


def test_ground_truth(site, site_val):
    images, responses, repeats = site_val
    gt = np.load(site / "ground_truth.npz")
    params = v1_model.load_params(site / "ground_truth.npz")
    n = responses.shape[1]
    assert gt["has_surround"].dtype == bool and gt["has_surround"].sum() == round(0.7 * n)
    assert (gt["surround_strength"][~gt["has_surround"]] == 0).all()
    assert (gt["surround_strength"][gt["has_surround"]] > 0).all()
    assert gt["val_noise_free"].shape == responses.shape
    np.testing.assert_allclose(repeats.mean(1), responses, atol=1e-6)
    # the saved parameters reproduce the saved noise-free responses
    np.testing.assert_allclose(v1_model.responses(images, params), gt["val_noise_free"], atol=1e-5)
    nc = gt["noise_ceiling"]
    assert nc.shape == (n,) and np.all((nc > 0.3) & (nc <= 1))
    ceiling_manual = [np.corrcoef(responses[:, j], gt["val_noise_free"][:, j])[0, 1] for j in range(n)]
    np.testing.assert_allclose(nc, ceiling_manual, atol=1e-4)
    assert np.all(gt["crf_only_corr"][~gt["has_surround"]] > 1 - 1e-9)


def test_responses_depend_on_surround_only_where_they_should(site, site_val):
    images = site_val[0][:200]
    other = np.roll(images, 1, axis=0)            # surround pixels from another image
    params = v1_model.load_params(site / "ground_truth.npz")
    base = v1_model.responses(images, params) - params["baseline"]
    masks = v1_model.crf_mask(params, images.shape[-1])
    for j, has in enumerate(params["has_surround"]):
        changed = np.where(masks[j], images, other)
        assert (changed[:, masks[j]] == images[:, masks[j]]).all()
        new = v1_model.responses(changed, params)[:, j] - params["baseline"][j]
        if has:
            drive = base[:, j] >= max(np.quantile(base[:, j], 0.9), 1e-9)
            rel = np.abs(new[drive] - base[drive, j]) / base[drive, j]
            assert drive.sum() >= 10 and rel.mean() > 0.1, (j, rel.mean())
        else:
            assert np.abs(new - base[:, j]).max() <= 1e-9, j


def test_deterministic(tmp_path):
    kw = dict(neurons=3, train=30, val=20, test=10, repeats=3, progress=False)
    a = synthesize(tmp_path / "a", seed=3, **kw)
    b = synthesize(tmp_path / "b", seed=3, **kw)
    c = synthesize(tmp_path / "c", seed=4, **kw)
    for f in ("train-00000-of-00001.tfrecord.gz", "val-00000-of-00001.tfrecord.gz",
              "test-00000-of-00001.tfrecord.gz", "ground_truth.npz"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "val-00000-of-00001.tfrecord.gz").read_bytes() != (c / "val-00000-of-00001.tfrecord.gz").read_bytes()
    with np.load(a / "ground_truth.npz") as g:
        assert g["test_noise_free"].shape == (10, 3) and g["noise_ceiling_test"].shape == (3,)


def test_overwrite_replaces_a_dataset_and_nothing_else(tmp_path):
    from tfsacnn.errors import DataError

    kw = dict(neurons=2, train=10, val=10, repeats=2, progress=False)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "lab_notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="notes: not a dataset directory .no manifest.json.; "
                                        "refusing to delete it"):
        synthesize(notes, overwrite=True, **kw)
    assert [p.name for p in notes.iterdir()] == ["lab_notes.txt"]
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(DataError, match="a_file: is a file, not a dataset directory"):
        synthesize(tmp_path / "a_file", overwrite=True, **kw)
    site = synthesize(tmp_path / "site", seed=1, **kw)
    with pytest.raises(DataError, match="already exists"):
        synthesize(site, **kw)
    first = (site / "ground_truth.npz").read_bytes()
    synthesize(site, seed=2, overwrite=True, **kw)                 # a dataset is replaced
    assert (site / "ground_truth.npz").read_bytes() != first
    # ... but not with a run (or anything else the dataset did not write) inside it
    run = site / "runs" / "ff_cnn"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    before = sorted(p.name for p in site.iterdir())
    with pytest.raises(DataError, match=r"site: holds runs, not part of the dataset; "
                                        r"--overwrite would delete it"):
        synthesize(site, seed=3, overwrite=True, **kw)
    assert sorted(p.name for p in site.iterdir()) == before and (run / "metrics.json").is_file()


def test_real_images(tmp_path):
    from PIL import Image
    d = tmp_path / "imgs"
    d.mkdir()
    for i, im in enumerate(stimuli.natural_images(15, 64, np.random.default_rng(0))):
        Image.fromarray((im * 255).astype(np.uint8)).save(d / f"img{i}.png")
    out = synthesize(tmp_path / "s", neurons=2, train=10, val=5, repeats=2, size=32, images=d, progress=False)
    assert (out / "image_index.csv").read_text().count("\n") == 16
    from tfsacnn.errors import DataError
    with pytest.raises(DataError, match="15 images"):
        synthesize(tmp_path / "t", neurons=2, train=20, val=5, images=d, progress=False)


def test_stimuli_are_natural_like():
    imgs = stimuli.natural_images(200, 50, np.random.default_rng(0))
    assert imgs.dtype == np.float32 and imgs.shape == (200, 50, 50)
    assert imgs.min() >= 0 and imgs.max() <= 1
    assert -3.0 < stimuli.power_spectrum_slope(imgs) < -1.5


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "data_prep.synthesize", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_cli_help_and_errors(tmp_path, capsys):
    r = _cli("--help")
    assert r.returncode == 0 and "--surround-fraction" in r.stdout and "--images" in r.stdout
    r = _cli("--out", str(tmp_path / "x"), "--neurons", "0")            # a real process: exit 2
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --neurons: must be >= 1, got 0"], r.stderr
    from data_prep.synthesize import main
    for bad in (["--out", str(tmp_path / "x"), "--surround-fraction", "1.5"],
                ["--out", str(tmp_path / "x"), "--train", "many"],
                ["--neurons", "3"],                                     # no --out
                ["--out", str(tmp_path / "x"), "--bogus"],
                ["--out", str(tmp_path), "--val", "10"]):               # exists, no --overwrite
        with pytest.raises(SystemExit) as e:
            main(bad)
        err = capsys.readouterr().err
        assert e.value.code == 2, bad
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (bad, err)
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- gated surround
def _grating_pair(params, j):
    """Two images for neuron j: the same iso-oriented surround grating around a centre
    grating that matches it (0) or is orthogonal to it (1)."""
    c, th, sf, r = ((params["x0"][j], params["y0"][j]), params["theta"][j], params["sf"][j],
                    params["crf_radius"][j])
    inside = v1_model.crf_mask({k: params[k][j:j + 1] for k in ("x0", "y0", "crf_radius")}, 50)[0]
    surround = stimuli.grating_patch(50, th, sf, center=c, annulus=(r, 40))
    return np.stack([np.where(inside, stimuli.grating_patch(50, tc, sf, center=c, radius=r), surround)
                     for tc in (th, th + np.pi / 2)])


@pytest.mark.parametrize("model", ["fixed", "gated"])
def test_gating_the_same_surround_suppresses_more_when_it_matches_the_centre(model):
    from data_prep.synthesize import generate_site

    site = generate_site(neurons=4, train=100, val=100, seed=1, surround_fraction=1.0,
                         surround_model=model)
    p = site["params"]
    assert v1_model.surround_model(p) == model
    for j in range(4):
        d = v1_model.drives(_grating_pair(p, j), p)
        match, ortho = v1_model.surround_factor(d, p)[:, j]
        assert 0 < match < 1, (model, j, match)                  # an iso surround suppresses
        if model == "gated":
            assert match < 0.5 * ortho, (j, match, ortho)        # released when they differ
            assert d["gate"][0, j] > 0.9 > 0.2 > d["gate"][1, j]
        else:                                                     # fixed: the centre does not matter
            assert abs(np.log(match / ortho)) < 0.1, (j, match, ortho)


def test_gated_site_is_deterministic_and_leaves_controls_and_stimuli_unchanged(tmp_path):
    kw = dict(neurons=4, train=30, val=20, test=10, repeats=3, seed=5, surround_fraction=0.5,
              progress=False)
    a = synthesize(tmp_path / "a", surround_model="gated", **kw)
    b = synthesize(tmp_path / "b", surround_model="gated", **kw)
    f = synthesize(tmp_path / "f", **kw)
    for name in ("train-00000-of-00001.tfrecord.gz", "val-00000-of-00001.tfrecord.gz",
                 "test-00000-of-00001.tfrecord.gz", "ground_truth.npz"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    with np.load(a / "ground_truth.npz") as g, np.load(f / "ground_truth.npz") as h:
        assert str(g["surround_model"]) == "gated" and "surround_model" not in h.files
        has = g["has_surround"]
        assert 0 < has.sum() < len(has) and (has == h["has_surround"]).all()
        for split in ("train", "val", "test"):
            # the same neurons and stimuli: controls respond identically, surround neurons do not
            np.testing.assert_array_equal(g[f"{split}_noise_free"][:, ~has], h[f"{split}_noise_free"][:, ~has])
            assert not np.allclose(g[f"{split}_noise_free"][:, has], h[f"{split}_noise_free"][:, has])
            assert (g[f"{split}_gate"][:, ~has] == 0).all()
            assert ((g[f"{split}_gate"][:, has] > 0) & (g[f"{split}_gate"][:, has] < 1)).all()
    params = v1_model.load_params(a / "ground_truth.npz")
    assert v1_model.surround_model(params) == "gated"
    from tfsacnn.data import load_numpy
    images, _ = load_numpy(a, "val")
    with np.load(a / "ground_truth.npz") as g:
        np.testing.assert_allclose(v1_model.responses(images[..., 0], params), g["val_noise_free"], atol=1e-5)
    manifest = __import__("json").loads((a / "manifest.json").read_text())
    assert manifest["synthetic"]["surround_model"] == "gated"


def test_gated_statistics_match_real_sample():
    """The gate's constants are fixed; the output nonlinearity's calibration still puts
    the gated site's response statistics in the real sample's ranges."""
    from data_prep.synthesize import generate_site

    site = generate_site(neurons=6, train=100, val=1000, seed=0, surround_model="gated")
    got = statistics_summary(site["splits"]["val"]["responses"])
    for k, (lo, hi) in REAL_RANGES.items():
        assert lo <= got[k] <= hi, (k, got[k])


def test_cli_surround_model_choice(tmp_path, capsys):
    from data_prep.synthesize import main
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "x"), "--surround-model", "flexible"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and "gated" in err[0]
    assert not (tmp_path / "x").exists()
