"""MEIs and surround MEIs (tfsacnn.insilico.mei) on a stand-in twin with a known response."""
import dataclasses

import numpy as np
import pytest

from tfsacnn.errors import ConfigError
from tfsacnn.insilico import mei as M

from helpers_insilico import (GREY, H, W, FakeTwin, assert_gradient_matches_analytic,
                              assert_mei_matches_reference)

FAST = M.MEIConfig(steps=60, seeds=2)


def test_backend_gradient_matches_the_analytic_gradient():
    assert_gradient_matches_analytic()


def test_mei_raises_the_response_and_keeps_the_norm():
    twin = FakeTwin(n=3)
    res = M.compute_meis(twin, FAST)
    # every seed ends far above its own (norm-projected) start and above random images
    x0 = GREY + M.initial_noise(twin.neurons, 2, (H, W), 0) * (twin.norm / H)
    start = twin.predict_own(M.project(x0, True, twin.norm, GREY, 0.0, 1.0))
    assert np.all(res.activation > 2 * start)
    rng = np.random.default_rng(5)
    rand = M.project(GREY + rng.standard_normal((200, 3, H, W)), True, twin.norm, GREY, 0.0, 1.0)
    assert np.all(res.response > twin.predict_own(rand).max(axis=0))
    np.testing.assert_allclose(M.contrast_norm(res.images, GREY), twin.norm, rtol=1e-3)
    assert res.mei.shape == (3, H, W) and res.images.shape == (2, 3, H, W)
    np.testing.assert_allclose(res.response, res.activation.max(axis=0))
    np.testing.assert_allclose(res.relative, res.response / twin.best_response)
    # the energy model's optimum: contrast along +-a (the quadratic term dominates)
    for j in range(3):
        d = (res.mei[j] - GREY).ravel()
        cos = abs(d @ twin.a[j].ravel()) / np.linalg.norm(d) / np.linalg.norm(twin.a[j])
        assert cos > 0.9


def test_mei_is_the_same_as_with_the_analytic_gradient():
    """The backend path and the numpy reference give the same MEI from the same seed."""
    assert_mei_matches_reference()


def test_a_neurons_start_does_not_depend_on_the_batch():
    both = M.initial_noise([3, 7], 2, (4, 5), seed=9)
    alone = M.initial_noise([7], 2, (4, 5), seed=9)
    np.testing.assert_array_equal(both[:, 1], alone[:, 0])
    assert not np.allclose(both[:, 0], both[:, 1])


def test_project_scales_the_free_pixels_to_the_norm_and_clips_to_the_range():
    rng = np.random.default_rng(0)
    x = (GREY + 0.05 * rng.standard_normal((2, 3, H, W))).astype(np.float32)
    free = np.zeros((1, 3, H, W), bool)
    free[..., :, W // 2:] = True
    target = np.array([1.0, 2.0, 3.0])
    out = M.project(x, free, target, GREY, 0.0, 1.0)
    np.testing.assert_array_equal(out[..., : W // 2], x[..., : W // 2])
    np.testing.assert_allclose(M.contrast_norm(out, GREY, free), np.broadcast_to(target, (2, 3)),
                               rtol=1e-3)
    # clipping binds: the norm is still reached, with saturated pixels
    big = M.project(x, True, 8.0, GREY, 0.0, 1.0)
    assert big.min() >= 0.0 and big.max() <= 1.0
    assert np.mean((big == 0.0) | (big == 1.0)) > 0.05
    np.testing.assert_allclose(M.contrast_norm(big, GREY), 8.0, rtol=1e-3)
    # a norm the range cannot hold: every pixel saturates, the norm stays below the target
    sat = M.project(x, True, 50.0, GREY, 0.0, 1.0)
    assert np.all(M.contrast_norm(sat, GREY) <= 50.0)
    assert np.all(M.contrast_norm(sat, GREY) >= 0.999 * 0.5 * H)


def test_mei_pixels_stay_in_the_pixel_range():
    twin = FakeTwin(n=2, norm=7.0)  # rms 0.35 around grey 0.5: the ascent saturates pixels
    res = M.compute_meis(twin, M.MEIConfig(steps=30, seeds=1))
    assert res.images.min() >= 0.0 and res.images.max() <= 1.0
    assert np.mean((res.images == 0.0) | (res.images == 1.0)) > 0.01
    np.testing.assert_allclose(M.contrast_norm(res.images, GREY), 7.0, rtol=1e-3)


def test_surround_mei_keeps_the_centre_and_raise_beats_lower():
    twin = FakeTwin(n=3, surround=True)
    res = M.compute_meis(twin, FAST)
    centres, diameters = np.full((3, 2), (H - 1) / 2), np.full(3, 10.0)
    s = M.compute_surround_meis(twin, res.mei, centres, diameters, FAST)
    inside = M.disc((H, W), centres, diameters)
    np.testing.assert_array_equal(s.inside, inside)
    for img in (s.raise_image, s.lower_image):
        np.testing.assert_array_equal(img[inside], res.mei[inside])
    np.testing.assert_array_equal(s.centre[~inside], GREY)
    assert np.all(s.raise_response > s.centre_response)
    assert np.all(s.lower_response < s.centre_response)
    np.testing.assert_allclose(s.mei_response, twin.predict_own(res.mei[None])[0])
    # the surround's norm is the typical norm's share of the surround's area
    share = (~inside).sum(axis=(1, 2)) / (H * W)
    np.testing.assert_allclose(s.surround_norm, twin.norm * np.sqrt(share))
    np.testing.assert_allclose(M.contrast_norm(s.raise_image, GREY, ~inside), s.surround_norm,
                               rtol=1e-3)
    # the known answer: the most exciting surround follows +c, the least exciting -c
    for j in range(3):
        c = twin.c[j][~inside[j]]
        up = s.raise_image[j][~inside[j]] - GREY
        down = s.lower_image[j][~inside[j]] - GREY
        assert up @ c / np.linalg.norm(up) / np.linalg.norm(c) > 0.9
        assert down @ c / np.linalg.norm(down) / np.linalg.norm(c) < -0.9


def test_closed_loop_on_a_known_truth():
    model = FakeTwin(n=3, seed=0)
    res = M.compute_meis(model, FAST)
    same = FakeTwin(n=3, seed=0)
    same.best_response = np.array([0.5, 1.0, 2.0])
    resp, rel = M.closed_loop(same, res.mei, same.best_response)
    np.testing.assert_allclose(resp, res.response, rtol=1e-5)
    np.testing.assert_allclose(rel, res.response / same.best_response, rtol=1e-5)
    # a truth with other filters is driven far less by the model's MEIs than by its own
    other = FakeTwin(n=3, seed=1)
    own = M.compute_meis(other, FAST)
    resp_other, _ = M.closed_loop(other, res.mei, np.ones(3))
    assert np.all(resp_other < 0.5 * own.response)
    # a non-positive best response gives no ratio
    assert np.isnan(M.closed_loop(same, res.mei, np.array([0.0, 1.0, -1.0]))[1][[0, 2]]).all()


@pytest.mark.parametrize("settings, problem", [
    ({"stepz": 5}, "unknown setting(s) stepz"),
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"seeds": 1.5}, "seeds must be an integer >= 1"),
    ({"steps": True}, "steps must be an integer >= 1"),
    ({"lr_start": -1}, "lr_start must be a number >= 0"),
    ({"norm": 0}, "norm must be a number > 0"),
    ({"surround_disc": "rf"}, "surround_disc must be 'gsf' or 'crf'"),
])
def test_bad_settings_are_refused_in_one_line(settings, problem):
    import re

    with pytest.raises(ConfigError, match="^mei: " + re.escape(problem)):
        M.MEIConfig.from_dict(settings)


def test_bad_surround_disc_and_norm_are_refused():
    twin = FakeTwin(n=1)
    mei = np.full((1, H, W), GREY, np.float32)
    with pytest.raises(ConfigError, match="covers the whole image"):
        M.compute_surround_meis(twin, mei, [[10, 10]], [100.0], FAST)
    with pytest.raises(ConfigError, match="empty"):
        M.compute_surround_meis(twin, mei, [[-50, -50]], [2.0], FAST)
    twin.norm = 0.0
    with pytest.raises(ConfigError, match="norm must be > 0"):
        M.compute_meis(twin, FAST)
    assert dataclasses.replace(FAST, norm=2.0).norm == 2.0


@pytest.mark.slow
def test_bench_insilico_times_the_meis(capsys):
    import json

    from tfsacnn.bench import main

    assert main(["insilico", "--neurons", "2", "--mei-steps", "3", "--skip-gratings"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["mei_steps"] == 3 and res["mei_s"] > 0 and res["neurons"] == 2
    # both are rounded (mei_step_s to 1e-4 s): 1000 steps agree to 0.1 s, plus rounding to 0.1
    assert res["mei_1000_steps_s"] == pytest.approx(res["mei_step_s"] * 1000, abs=0.15)
    assert "seconds" not in res and res["what"] == "MEIs"   # --skip-gratings


def test_blur_is_a_normalised_gaussian_of_the_given_sigma():
    g = np.zeros((1, 2, 31, 31), np.float32)
    g[0, 0, 15, 15] = 1.0
    out = M.blur(g, 2.0)
    r2 = (np.mgrid[0:31, 0:31] - 15.0) ** 2
    want = np.exp(-(r2[0] + r2[1]) / (2 * 2.0 ** 2))
    np.testing.assert_allclose(out[0, 0], want / want.sum(), atol=1e-4)
    np.testing.assert_array_equal(out[0, 1], 0.0)            # images do not mix
    assert M.blur(g, 0.01) is g                                # sigma_end: no blur
