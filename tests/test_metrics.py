"""tfsacnn.metrics: hand-computed cases, edge cases, and the real sample."""
import warnings

import numpy as np
import pytest
from scipy import stats

from tfsacnn import metrics as M

# Two neurons, five images, top_k=2 (numbers worked out by hand in the comments).
Y_TRUE = np.array([[5., 1.], [1., 2.], [4., 3.], [2., 4.], [3., 5.]])
Y_PRED = np.array([[3., 2.], [6., 4.], [4., 7.], [0., 1.], [1., 3.]])


def test_corr_hand():
    # neuron 0: t-mean 3 -> [2,-2,1,-1,0]; p-mean 2.8 -> [.2,3.2,1.2,-2.8,-1.8]
    #   sum tp = .4-6.4+1.2+2.8+0 = -2; sum tt = 10; sum pp = 22.8
    # neuron 1: t = 1..5 -> [-2,-1,0,1,2]; p-mean 3.4 -> [-1.4,.6,3.6,-2.4,-.4]
    #   sum tp = 2.8-.6+0-2.4-.8 = -1; sum tt = 10; sum pp = 1.96+.36+12.96+5.76+.16 = 21.2
    expected = [-2 / np.sqrt(10 * 22.8), -1 / np.sqrt(10 * 21.2)]
    np.testing.assert_allclose(M.corr(Y_TRUE, Y_PRED), expected, rtol=1e-12)
    # t = [1,2,3], p = [2,4,7]: sum tp = 5, sum tt = 2, sum pp = 114/9 -> 15/sqrt(228)
    np.testing.assert_allclose(M.corr([[1.], [2.], [3.]], [[2.], [4.], [7.]]), [15 / np.sqrt(228)])


def test_peak_tuning_hand():
    # neuron 0: top-2 true = images 0 (5), 2 (4); thr = 4.
    #   PT_J: preds there 3 (<4), 4 (>=4, inclusive) -> 1/2.
    #   PT_S: top-2 predicted values 6, 4 -> both >= 4 -> 2/2.
    #   (Had PT_S looked at the TRUE responses of those images, 1 and 4, it would be 1/2.)
    # neuron 1: top-2 true = images 4 (5), 3 (4); thr = 4.
    #   PT_J: preds 3, 1 -> 0/2.   PT_S: top-2 predicted 7, 4 -> 2/2.
    np.testing.assert_array_equal(M.peak_tuning_joint(Y_TRUE, Y_PRED, top_k=2), [0.5, 0.0])
    np.testing.assert_array_equal(M.peak_tuning_separate(Y_TRUE, Y_PRED, top_k=2), [1.0, 1.0])
    # top_k=3, neuron 0: top-3 true = images 0, 2, 4; thr = 3.
    #   PT_J: preds 3 (>=3), 4, 1 -> 2/3.  PT_S: top-3 predicted 6, 4, 3 -> 3/3.
    assert M.peak_tuning_joint(Y_TRUE, Y_PRED, top_k=3)[0] == pytest.approx(2 / 3)
    assert M.peak_tuning_separate(Y_TRUE, Y_PRED, top_k=3)[0] == 1.0
    # PT_S with low predictions: top-2 predicted 0.5, 0.4 vs thr 4 -> 0; one reaches it -> 1/2.
    low = np.array([[0.1], [0.5], [0.4], [0.2], [0.3]])
    assert M.peak_tuning_separate(Y_TRUE[:, :1], low, top_k=2)[0] == 0.0
    low[3] = 4.0
    assert M.peak_tuning_separate(Y_TRUE[:, :1], low, top_k=2)[0] == 0.5


def test_ties_at_threshold():
    # true [3,5,3,3,1], top_k=2: image 1 (5), then three images tie at 3; the lowest index
    # (image 0) wins, so the top-2 set is {1, 0} and thr = 3.
    t = np.array([[3.], [5.], [3.], [3.], [1.]])
    p = np.array([[0.], [9.], [9.], [9.], [9.]])
    assert M.peak_tuning_joint(t, p, top_k=2)[0] == 0.5      # 9 >= 3 yes, 0 >= 3 no
    assert M.peak_tuning_separate(t, p, top_k=2)[0] == 1.0   # 9, 9 >= 3
    # top_k=3 -> {1, 0, 2}: 9, 0, 9 -> 2/3
    assert M.peak_tuning_joint(t, p, top_k=3)[0] == pytest.approx(2 / 3)
    # the same data with image 0 moved last: now {1, 2} -> 1.0 (tie rule is by index)
    assert M.peak_tuning_joint(t[[1, 2, 3, 4, 0]], p[[1, 2, 3, 4, 0]], top_k=2)[0] == 1.0
    # a prediction exactly at thr counts (inclusive), also in float32
    t32 = np.array([[0.3], [0.7], [0.1]], dtype=np.float32)
    p32 = np.array([[0.3], [0.0], [0.0]], dtype=np.float32)
    assert M.peak_tuning_joint(t32, p32, top_k=2)[0] == 0.5
    assert M.peak_tuning_separate(t32, p32, top_k=2)[0] == 0.5
    # all true responses equal: top-k = first k images
    flat = np.ones((4, 1))
    assert M.peak_tuning_joint(flat, np.array([[1.], [0.], [1.], [1.]]), top_k=2)[0] == 0.5


def test_top_overlap_and_peak_height_hand():
    # neuron 0: top-2 true {0, 2}; top-2 predicted {1 (6), 2 (4)} -> TOP 1/2.
    #   height: true (5+4)/2 - 3 = 1.5; pred (3+4)/2 - 2.8 = 0.7 -> 0.7/1.5.
    # neuron 1: top-2 true {4, 3}; top-2 predicted {2 (7), 1 (4)} -> TOP 0.
    #   height: true 4.5 - 3 = 1.5; pred (3+1)/2 - 3.4 = -1.4 -> -1.4/1.5.
    np.testing.assert_array_equal(M.top_overlap(Y_TRUE, Y_PRED, top_k=2), [0.5, 0.0])
    np.testing.assert_allclose(M.peak_height(Y_TRUE, Y_PRED, top_k=2), [0.7 / 1.5, -1.4 / 1.5],
                               rtol=1e-12)
    # ties: true [3,5,3,3,1] -> {1, 0}; predicted [0,9,9,9,9] -> {1, 2} (lower index wins)
    t = np.array([[3.], [5.], [3.], [3.], [1.]])
    assert M.top_overlap(t, np.array([[0.], [9.], [9.], [9.], [9.]]), top_k=2)[0] == 0.5
    # scale: an increasing affine map keeps TOP and multiplies the height by its slope,
    # while PT_J falls once the predicted peaks drop below the true threshold
    np.testing.assert_array_equal(M.top_overlap(Y_TRUE, 0.5 * Y_TRUE + 1, 2), [1, 1])
    np.testing.assert_allclose(M.peak_height(Y_TRUE, 0.5 * Y_TRUE + 1, 2), [0.5, 0.5])
    np.testing.assert_array_equal(M.peak_tuning_joint(Y_TRUE, 0.5 * Y_TRUE + 1, 2), [0, 0])
    # a constant truth has no peak: NaN height; NaN columns give NaN
    flat = np.ones((5, 1))
    assert np.isnan(M.peak_height(flat, Y_PRED[:, :1], 2)[0])
    nan = Y_TRUE.copy()
    nan[1, 1] = np.nan
    for f in (M.top_overlap, M.peak_height):
        out = f(nan, Y_PRED, 2)
        assert np.isnan(out[1]) and not np.isnan(out[0])
        with pytest.raises(ValueError, match="larger than the number of images"):
            f(Y_TRUE, Y_PRED, 6)


def test_constant_prediction_nan_and_summarize():
    t = np.array([[1., 1.], [2., 3.], [3., 2.]])
    p = np.array([[0.5, 1.], [0.5, 2.], [0.5, 3.]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = M.corr(t, p)
        assert np.isnan(M.corr(p, t)[0])              # constant truth too
        s = M.summarize(M.evaluate(t, p, top_k=1))
    assert np.isnan(c[0]) and c[1] == pytest.approx(0.5)
    assert s["corr"] == pytest.approx(0.5)            # NaN excluded from the mean
    assert s["n_nan"] == 1
    # PT of a constant 0.5 vs thr 3 (neuron 0) is 0; neuron 1: top true image 1 (3) -> pred 2 < 3;
    # top pred 3 >= 3 -> PT_S 1.
    assert s["pt_j"] == 0.0 and s["pt_s"] == pytest.approx(0.5)


def test_summarize_hand():
    s = M.summarize({"corr": np.array([0.5, np.nan, 0.3]), "pt_j": np.array([1., 0., np.nan]),
                     "pt_s": np.array([np.nan, np.nan, np.nan]), "fev": None})
    assert s["corr"] == pytest.approx(0.4) and s["pt_j"] == 0.5
    assert np.isnan(s["pt_s"]) and "fev" not in s
    assert s["n_nan"] == 3


def test_nan_input_column_gives_nan():
    t = np.array([[1., 1.], [2., np.nan], [3., 2.]])
    p = np.array([[1., 1.], [2., 2.], [4., 3.]])
    for f in (M.corr, M.peak_tuning_joint, M.peak_tuning_separate):
        out = f(t, p) if f is M.corr else f(t, p, top_k=1)
        assert np.isnan(out[1]) and not np.isnan(out[0])


def test_refusals():
    t = np.zeros((5, 2))
    with pytest.raises(ValueError, match="top_k=6 is larger than the number of images \\(5\\)"):
        M.peak_tuning_joint(t, t, top_k=6)
    with pytest.raises(ValueError, match="larger than the number of images"):
        M.peak_tuning_separate(t, t, top_k=6)
    with pytest.raises(ValueError, match="top_k"):
        M.peak_tuning_joint(t, t, top_k=0)
    for f in (M.corr, lambda a, b: M.peak_tuning_joint(a, b, 2), lambda a, b: M.peak_tuning_separate(a, b, 2)):
        with pytest.raises(ValueError, match="shape mismatch"):
            f(t, np.zeros((5, 3)))
        with pytest.raises(ValueError, match="2-D"):
            f(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="repeats"):
        M.normalized_corr(t, t, np.zeros((4, 3, 2)))


def test_perfect_prediction():
    t = np.array([[1., 0.], [3., 2.], [2., 5.], [0., 1.]])
    out = M.evaluate(t, t, top_k=2)
    for k in ("corr", "pt_j", "pt_s", "top_overlap", "peak_height"):
        np.testing.assert_allclose(out[k], 1.0)
    # an increasing affine map keeps CORR 1 and PT_J 1
    assert M.corr(t, 2 * t + 1) == pytest.approx([1, 1])
    np.testing.assert_array_equal(M.peak_tuning_joint(t, 2 * t + 1, 2), [1, 1])


def test_fev_and_ceiling_hand():
    # one neuron, image 0 trials [1, 3], image 1 trials [5, 7]
    r = np.array([[[1.], [3.]], [[5.], [7.]]])
    # all trials 1,3,5,7: var(ddof=1) = 20/3; per-image var 2 and 2 -> noise 2
    # FEV = (20/3 - 2) / (20/3) = 0.7
    np.testing.assert_allclose(M.fev(r), [0.7])
    # means 2, 6 -> var 8; noise of a mean = 2/2 = 1 -> CC_max = sqrt(7/8)
    np.testing.assert_allclose(M.corr_ceiling(r), [np.sqrt(7 / 8)])
    # missing trial: image 0 [1, 3, NaN], image 1 [5, 7, 6]
    r = np.array([[[1.], [3.], [np.nan]], [[5.], [7.], [6.]]])
    # trials 1,3,5,7,6: mean 4.4, sum sq dev 23.2 -> var 5.8; per-image var 2 and 1 -> noise 1.5
    np.testing.assert_allclose(M.fev(r), [(5.8 - 1.5) / 5.8])
    # means 2, 6 -> var 8; noise of a mean = mean(2/2, 1/3) = 2/3 -> CC_max = sqrt((8 - 2/3) / 8)
    np.testing.assert_allclose(M.corr_ceiling(r), [np.sqrt((8 - 2 / 3) / 8)])


def test_normalized_corr_hand():
    # 3 images, 2 trials: [0,2], [2,4], [6,8] -> means 1, 3, 7 (var 28/3); per-image var 2
    # -> noise of a mean 1 -> CC_max = sqrt((28/3 - 1) / (28/3)) = sqrt(25/28)
    r = np.array([[[0.], [2.]], [[2.], [4.]], [[6.], [8.]]])
    y = r.mean(axis=1)
    pred = np.array([[1.], [2.], [3.]])
    # corr(means [1,3,7], [1,2,3]): centred [-8/3,-2/3,10/3], [-1,0,1] -> 6 / sqrt(56/3 * 2)
    c = 6 / np.sqrt(56 / 3 * 2)
    np.testing.assert_allclose(M.normalized_corr(y, pred, r), [c / np.sqrt(25 / 28)])
    out = M.evaluate(y, pred, top_k=1, repeats=r)
    assert set(out) == {"corr", "pt_j", "pt_s", "top_overlap", "peak_height", "fev",
                        "corr_ceiling", "normalized_corr"}
    # pure noise (no signal): ceiling undefined -> NaN, no warning
    r0 = np.array([[[0.], [2.]], [[2.], [0.]], [[1.], [1.]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(M.corr_ceiling(r0)[0])


# --------------------------------------------------------------------------- real sample
def _loop_metrics(t, p, top_k):
    """Straightforward per-neuron loops (after the paper's notebook), independent of M."""
    n_img, n = t.shape
    out = {"corr": [], "pt_j": [], "pt_s": []}
    for j in range(n):
        real, pred = list(t[:, j]), list(p[:, j])
        out["corr"].append(stats.pearsonr(real, pred)[0])
        # Python's sort is stable, also with reverse=True: equal reals keep index order
        joint = sorted(zip(range(n_img), pred, real), key=lambda x: x[2], reverse=True)
        thr = joint[top_k - 1][2]
        out["pt_j"].append(sum(1 for _, pr, _ in joint[:top_k] if pr >= thr) / top_k)
        top_pred = sorted(pred, reverse=True)[:top_k]
        out["pt_s"].append(sum(1 for pr in top_pred if pr >= thr) / top_k)
    return {k: np.array(v) for k, v in out.items()}


def test_real_sample_truth_is_perfect(real_sample):
    out = M.evaluate(real_sample, real_sample.copy())
    for k, v in out.items():
        assert v.shape == (10,)
        np.testing.assert_allclose(v, 1.0, err_msg=k)


def test_truth_plus_noise_of_known_size_scores_the_known_corr(real_sample):
    """Not the truth fed in as the model: prediction j = truth_j + noise whose sample
    correlation with truth_j is 0 and whose s.d. is k_j times truth_j's, so its CORR is
    exactly 1 / sqrt(1 + k_j^2); a positive affine map of that prediction scores the same."""
    rng = np.random.default_rng(4)
    t = real_sample
    k = np.linspace(0.25, 3.0, t.shape[1])
    tc = t - t.mean(0)
    noise = rng.normal(size=t.shape)
    noise -= noise.mean(0)
    noise -= tc * (noise * tc).sum(0) / (tc * tc).sum(0)          # orthogonal to the truth
    noise *= k * tc.std(0) / noise.std(0)
    pred = t + noise
    want = 1 / np.sqrt(1 + k ** 2)
    np.testing.assert_allclose(M.evaluate(t, pred)["corr"], want, rtol=1e-6)
    np.testing.assert_allclose(M.evaluate(t, 3 * pred - 5)["corr"], want, rtol=1e-6)


def test_real_sample_matches_loop(real_sample):
    rng = np.random.default_rng(1)
    t = real_sample
    for p, tt in [
        (t + 0.5 * t.std(0) * rng.standard_normal(t.shape), t),
        # rounded copies create many ties, in truth and prediction
        (np.round(t + 0.3 * t.std(0) * rng.standard_normal(t.shape), 2), np.round(t, 2)),
    ]:
        for k in (10, 25):
            ref = _loop_metrics(tt, p, k)
            got = M.evaluate(tt, p, top_k=k)
            for name in ref:
                np.testing.assert_allclose(got[name], ref[name], rtol=1e-10, err_msg=name)


def test_real_sample_noise_degrades(real_sample):
    t = real_sample
    rng = np.random.default_rng(0)
    e = rng.standard_normal(t.shape) * t.std(0)
    # variance-preserving mix of truth and noise: every metric falls, strictly inside (0, 1)
    means = []
    for a in (0.1, 0.3, 0.6):
        s = M.summarize(M.evaluate(t, np.sqrt(1 - a) * t + np.sqrt(a) * e))
        means.append([s["corr"], s["pt_j"], s["pt_s"]])
    means = np.array(means)
    assert ((means > 0) & (means < 1)).all(), means
    assert (np.diff(means, axis=0) < 0).all(), means
    # additive noise: CORR and PT_J fall; PT_S, which compares predicted VALUES with the
    # real threshold, does not (noise inflates the predicted peaks); PT_S >= PT_J always.
    prev = None
    for s_ in (0.25, 0.5, 1.0):
        out = M.evaluate(t, t + s_ * e)
        cur = np.array([np.mean(out["corr"]), np.mean(out["pt_j"])])
        assert ((cur > 0) & (cur < 1)).all()
        assert (out["pt_s"] >= out["pt_j"]).all()
        if prev is not None:
            assert (cur < prev).all(), (cur, prev)
        prev = cur


def test_partial_corr_matches_regression_residuals_and_limits():
    rng = np.random.default_rng(4)
    crf = rng.gamma(0.5, 1.0, size=(300, 3))
    surround = rng.normal(size=(300, 3))
    truth = crf + 0.5 * surround
    # any affine function of the control leaves no residual: NaN
    np.testing.assert_allclose(M.partial_corr(truth, 2 * crf + 1, crf), np.nan)
    # a prediction = control + the surround part captures all of it
    np.testing.assert_allclose(M.partial_corr(truth, crf + 3 * surround, crf), 1.0)
    # general case: the correlation of least-squares residuals on [1, control]
    pred = crf + rng.normal(size=(300, 3)) + 0.2 * surround
    expected = []
    for j in range(3):
        a = np.stack([np.ones(300), crf[:, j]], 1)
        rt = truth[:, j] - a @ np.linalg.lstsq(a, truth[:, j], rcond=None)[0]
        rp = pred[:, j] - a @ np.linalg.lstsq(a, pred[:, j], rcond=None)[0]
        expected.append(np.corrcoef(rt, rp)[0, 1])
    np.testing.assert_allclose(M.partial_corr(truth, pred, crf), expected, rtol=1e-10)
