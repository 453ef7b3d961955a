"""A small stand-in for `tfsacnn.insilico.forward.Twin` with a known response, for MEI tests.

Neuron j responds to its image x_j (H, W) as an energy model plus a linear term:

    u_j = <a_j, x_j - g>^2 / k + <b_j, x_j - g> + <c_j, x_j - g>,     r_j = softplus(u_j)

with `a_j` and `b_j` Gabor-like filters cut to a disc of radius `radius` around the image
centre, and `c_j` a filter on the surround outside it (zero by default). The analytic
gradient `numpy_value_and_grad` is the independent reference of the backends' paths.
"""
import numpy as np

H = W = 20
GREY = 0.5
RANGE = (0.0, 1.0)


def _filters(n, seed, radius):
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:H, 0:W] - (H - 1) / 2
    inside = rows ** 2 + cols ** 2 <= radius ** 2
    a, b, c = (np.zeros((n, H, W)) for _ in range(3))
    for j in range(n):
        theta, f = rng.uniform(0, np.pi), rng.uniform(0.1, 0.2)
        env = np.exp(-(rows ** 2 + cols ** 2) / (2 * (radius / 2) ** 2)) * inside
        phase = 2 * np.pi * f * (rows * np.cos(theta) + cols * np.sin(theta))
        a[j], b[j] = env * np.cos(phase), env * np.sin(phase) * 0.5
        c[j] = np.where(inside, 0.0, np.cos(phase) * 0.3)
    return a, b, c, inside


class FakeTwin:
    """The Twin API (forward.Twin) for `n` energy-model neurons on 20 x 20 images in [0, 1]."""

    def __init__(self, n=3, seed=0, radius=5.0, surround=False, k=0.5, norm=3.0):
        self.n, self.neurons = n, list(range(n))
        self.image_shape = (H, W)
        self.mean_grey, self.pixel_range, self.norm = GREY, RANGE, norm
        a, b, c, self.inside = _filters(n, seed, radius)
        self.a, self.b = a.astype(np.float32), b.astype(np.float32)
        self.c = (c if surround else 0 * c).astype(np.float32)
        self.k = k
        self.best_response = np.ones(n)
        self.truth = None

    def _u(self, d):
        return (np.einsum("bnhw,nhw->bn", d, self.a) ** 2 / self.k
                + np.einsum("bnhw,nhw->bn", d, self.b + self.c))

    def predict_own(self, raw):
        """(b, n, H, W) -> (b, n)."""
        return np.logaddexp(0, self._u(np.asarray(raw, np.float64) - GREY))

    def response_fn(self):
        """keras.ops (b, n, H, W) -> (b, n)."""
        from keras import ops

        a, bc, k = self.a, self.b + self.c, self.k

        def fn(x):
            d = x - GREY
            u = ops.sum(d * a, axis=(2, 3)) ** 2 / k + ops.sum(d * bc, axis=(2, 3))
            return ops.softplus(u)

        return fn

    def numpy_value_and_grad(self, x, weights):
        """The analytic reference of `gradients.value_and_grad(self.response_fn())`."""
        d = np.asarray(x, np.float64) - GREY
        lin_a = np.einsum("bnhw,nhw->bn", d, self.a)
        u = lin_a ** 2 / self.k + np.einsum("bnhw,nhw->bn", d, self.b + self.c)
        y = np.logaddexp(0, u)
        du = 2 * lin_a[..., None, None] * self.a / self.k + (self.b + self.c)
        grad = (weights / (1 + np.exp(-u)))[..., None, None] * du
        return y.astype(np.float32), grad.astype(np.float32)


def assert_gradient_matches_analytic():
    """The active backend's MEI gradient against FakeTwin's analytic numpy gradient."""
    from tfsacnn.insilico.gradients import value_and_grad

    twin = FakeTwin(n=3, surround=True)
    rng = np.random.default_rng(1)
    x = (GREY + 0.2 * rng.standard_normal((2, 3, H, W))).astype(np.float32)
    w = np.array([[1.0, -1.0, 2.0], [0.5, 1.0, -1.0]], np.float32)
    y, g = value_and_grad(twin.response_fn())(x, w)
    y_ref, g_ref = twin.numpy_value_and_grad(x, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4)
    np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-5 * np.abs(g_ref).max())


def assert_mei_matches_reference():
    """The backend's MEI and the one from the numpy reference gradient, from the same seed:
    float32 against float64 gradients drift by ~1 % of the contrast in 25 steps."""
    from tfsacnn.insilico import mei as M

    twin = FakeTwin(n=2)
    cfg = M.MEIConfig(steps=25, seeds=1)
    ours = M.compute_meis(twin, cfg)
    ref = M.compute_meis(twin, cfg, vg=twin.numpy_value_and_grad)
    scale = np.abs(ref.mei - GREY).max()
    np.testing.assert_allclose(ours.mei, ref.mei, atol=0.02 * scale)
    np.testing.assert_allclose(ours.response, ref.response, rtol=5e-3)
