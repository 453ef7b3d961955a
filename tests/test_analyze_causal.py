"""The causal surround triple test (tfsacnn.analyze.causal_triples) against stand-in
models that can fail: only a model with the site's own surround scores high."""
import numpy as np
import pytest

from data_prep import v1_model
from data_prep.synthesize import generate_site
from tfsacnn.evaluation import analyze

TRIPLES = 40


@pytest.fixture(scope="module", params=["gated", "fixed"])
def site(request):
    """A small all-surround site of one surround model: (params, images (N, S, S, 1),
    weights, triples, true change (p, n))."""
    s = generate_site(neurons=3, train=1, val=120, test=0, repeats=2, seed=5,
                      surround_fraction=1.0, surround_model=request.param)
    p, x = s["params"], s["splits"]["val"]["images"][..., None]
    w = analyze.crf_weights(x.shape[1], p["x0"], p["y0"], p["crf_radius"])
    drivers = analyze.driving_images(v1_model.responses(x[..., 0], p))
    triples = [analyze.swap_triples(d, len(x), TRIPLES, seed=j) for j, d in enumerate(drivers)]
    truth = analyze.triple_changes(lambda z: v1_model.responses(z[..., 0], p), x, w, triples)
    return request.param, p, x, w, triples, truth


def _score(site, predict):
    _, p, x, w, triples, truth = site
    m = analyze.triple_changes(predict, x, w, triples)
    return analyze.causal_scores(m, truth, np.ones(m.shape[1]))


def _recalibrated(params, x):
    return v1_model.calibrate(params, v1_model.drives(x[..., 0], params))


@pytest.mark.slow
def test_stand_ins_score_as_their_surround_allows(site):
    sm, p, x, *_ = site
    truth = _score(site, lambda z: v1_model.responses(z[..., 0], p))
    np.testing.assert_allclose(truth["fve"], 1.0)
    np.testing.assert_allclose(truth["corr"], 1.0)
    # CRF only: no change at all -> corr 0 (not NaN), fve 0
    crf = _score(site, lambda z: v1_model.responses(z[..., 0], p, context=False))
    assert (crf["corr"] == 0).all() and (np.abs(crf["fve"]) < 1e-6).all()
    # a CRF that spreads past the true disc, no surround: changes, but not the surround's
    wide = _recalibrated({**p, "crf_radius": p["crf_radius"] * 1.5}, x)
    spread = _score(site, lambda z: v1_model.responses(z[..., 0], wide, context=False))
    assert (spread["fve"] < 0.1).all() and np.isfinite(spread["corr"]).all()
    # the fixed, orientation-tuned surround: right on a fixed site, low on a gated one
    fixed = _recalibrated({k: v for k, v in p.items() if k not in v1_model.GATE_PARAM_NAMES}, x)
    f = _score(site, lambda z: v1_model.responses(z[..., 0], fixed))
    if sm == "gated":
        assert f["fve"].mean() < 0.3 and (f["fve"] < 0.6).all()
    else:
        np.testing.assert_allclose(f["fve"], 1.0, atol=1e-4)   # recalibrated on fewer images


def test_causal_scores_constant_change_is_zero_never_nan():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(50, 3))
    t[:, 2] = 0.0                                       # a control: no true change
    const = np.full((50, 3), 0.7)
    s = analyze.causal_scores(const, t, np.ones(3))
    assert (s["corr"] == 0).all()
    np.testing.assert_allclose(s["fve"][:2], 0.0, atol=1e-12)
    assert np.isnan(s["fve"][2]) and s["change_rms"][2] == pytest.approx(0.7)
    half = analyze.causal_scores(0.5 * t, t, np.ones(3))       # right shape, half the size
    np.testing.assert_allclose(half["corr"][:2], 1.0)
    np.testing.assert_allclose(half["fve"][:2], 0.75, atol=1e-12)   # magnitude counts


def test_swap_triples_use_driving_centres_and_distinct_surrounds():
    t = analyze.swap_triples(np.array([3, 7]), 10, 500, seed=1)
    assert set(t[:, 0]) == {3, 7}
    assert ((t[:, 0] != t[:, 1]) & (t[:, 0] != t[:, 2]) & (t[:, 1] != t[:, 2])).all()
    assert len(set(map(tuple, t[:, 1:]))) > 50
    np.testing.assert_array_equal(t, analyze.swap_triples(np.array([3, 7]), 10, 500, seed=1))
    d = analyze.driving_images(np.array([[0.1, 5], [3, 1], [2, 4], [9, 0]], float), 0.5)
    assert [sorted(x.tolist()) for x in d] == [[1, 3], [0, 2]]
