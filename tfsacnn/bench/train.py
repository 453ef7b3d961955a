"""`python -m tfsacnn.bench train`: speed of full training steps (forward, backward, Adam).

Times `--steps` steps on synthetic tensors after warm-up, for `--neurons` neurons of
`--model`, and prints one JSON line: backend, neuron_images_per_s, step_ms_median,
peak_rss_mb, gflops_per_s (against the analytic training cost, 3x the forward FLOPs of
`forward_flops`), n_neurons. With `--baseline torch` (needs the `torch` extra) the same
run also times the paper's construction, a PyTorch loop over one module per neuron (in
a child process, right after tfsacnn's steps), and reports the ratio.

The step runs under Keras' backend (`KERAS_BACKEND`): under TensorFlow a `tf.function`
with a GradientTape; under JAX one `jax.jit` function of the stateless APIs
(`model.stateless_call`, `jax.value_and_grad`, `optimizer.stateless_apply`).
"""
import json
import os
import resource
import time
from functools import partial

import numpy as np

from ..errors import ConfigError, DeprecatedAlias, int_at_least

TRAIN_FACTOR = 3  # backward ~ 2x forward


def add_arguments(p):
    pos = int_at_least(1)
    # --model is checked against tfsacnn.models.names() in main (importing the registry
    # imports TensorFlow, which --help should not wait for).
    p.add_argument("--model", default="ff_sa_cnn",
                   help="a tfsacnn.models variant (default ff_sa_cnn)")
    p.add_argument("--neurons", type=pos, default=32, help="neurons trained together")
    p.add_argument("--batch-size", type=pos, default=50, help="images per step")
    p.add_argument("--batch", dest="batch_size", type=pos, new="--batch-size",
                   action=DeprecatedAlias)
    p.add_argument("--steps", type=pos, default=20, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int_at_least(0), default=3,
                   help="untimed steps first (compilation)")
    p.add_argument("--core", choices=["independent", "shared"], default="independent",
                   help="one network per neuron, or one shared core")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                   help="where to run (gpu: refused when none is visible)")
    p.add_argument("--conv-implementation", choices=["auto", "map", "grouped"], default="auto",
                   help="per-neuron convolutions: auto picks grouped on GPU, map on CPU")
    p.add_argument("--baseline", choices=["none", "torch"], default="none",
                   help="also time the paper's per-neuron PyTorch loop in this run")
    p.add_argument("--precision", choices=["float32", "mixed_bfloat16", "mixed_float16"],
                   default="float32", help="compute precision (weights stay float32)")
    p.add_argument("--threads", type=int_at_least(0), default=0,
                   help="intra/inter-op threads of TensorFlow and PyTorch (0: their default; "
                        "JAX: set XLA_FLAGS instead)")
    p.add_argument("--site-images", type=pos, default=34000,
                   help="images per epoch for the extrapolated site time (default 34000)")
    p.add_argument("--site-epochs", type=pos, default=50,
                   help="epochs for the extrapolated site time (default 50)")
    p.add_argument("--site-neurons", type=pos, default=300,
                   help="neurons of the projected site (default 300), at the measured "
                        "neuron-images/s")


def forward_flops(name, **overrides):
    """Analytic forward FLOPs (2 per multiply-add) of one neuron's network on one image.

    Counts convolutions, the SA block's projections and attention products, and the
    readout; BatchNorm, sigmoid and pooling (elementwise, < 2%) are left out.
    """
    from .. import models
    from ..nn.layers import MultiHeadSelfAttention2D, NeuronConv2D, Readout, SelfAttention2D

    m = models.build(name, **overrides)
    total = 0
    for layer in m.layers:
        if isinstance(layer, NeuronConv2D):
            _, h, w, c = layer.output.shape
            total += 2 * h * w * layer.kernel_size ** 2 * layer.c_in * c
        elif isinstance(layer, (SelfAttention2D, MultiHeadSelfAttention2D)):
            _, h, w, c = layer.output.shape
            p, d, heads = h * w, layer.key_dim, layer.num_heads
            value_mapping = getattr(layer, "value_mapping", True)
            dv = layer.value_dim if value_mapping else c // heads
            total += 2 * 2 * p * c * d * heads + 2 * p * p * d * heads + 2 * p * p * dv * heads
            if value_mapping:
                total += 2 * 2 * p * c * dv * heads
        elif isinstance(layer, Readout):
            total += 2 * sum(int(np.prod(v.shape)) for v in layer.weights if "kernel" in v.name)
    return total


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(step, steps, warmup):
    """Median seconds per call of `step`, after `warmup` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _time_torch_in_child(args):
    """The baseline's median step, timed in a fresh process: TF's and PyTorch's thread
    pools in one process slow each other down by up to 20x on 2 cores."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_torch_time, (args,))


def _torch_time(args):
    return _time(torch_step(args), args.steps, args.warmup)


def _synthetic(args):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, 50, 50, 1)).astype("float32")
    y = rng.normal(size=(args.batch_size, args.neurons)).astype("float32")
    return x, y


def _build(args):
    from .. import models

    return models.build(args.model, n_neurons=args.neurons, core=args.core,
                        conv_implementation=args.conv_implementation,
                        precision=args.precision)


def keras_step(args):
    """One compiled training step of tfsacnn's model under Keras' backend, as a callable."""
    import keras

    return jax_step(args) if keras.backend.backend() == "jax" else tf_step(args)


def jax_step(args):
    """The step under JAX: one `jax.jit` of stateless_call + value_and_grad +
    stateless_apply, the state (weights, BatchNorm statistics, Adam slots) donated."""
    import jax
    import jax.numpy as jnp
    import keras

    device = jax.devices("gpu" if args.device == "gpu" else "cpu")[0]
    x, y = (jax.device_put(a, device) for a in _synthetic(args))
    with jax.default_device(device):
        model = _build(args)
        opt = keras.optimizers.Adam(1e-3, epsilon=1e-8)
        opt.build(model.trainable_variables)
    state = [[jax.device_put(v.value, device) for v in vs] for vs in
             (model.trainable_variables, model.non_trainable_variables, opt.variables)]

    def loss_fn(trainable, non_trainable):
        pred, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return jnp.sum(jnp.square(pred.astype("float32") - y)) / args.batch_size, non_trainable

    @partial(jax.jit, donate_argnums=0)
    def step(state):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, non_trainable)
        trainable, opt_vars = opt.stateless_apply(opt_vars, grads, trainable)
        return [trainable, non_trainable, opt_vars], loss

    def run():
        nonlocal state
        state, loss = step(state)
        return float(loss)  # waits for the step

    return run


def tf_step(args):
    """The step under TensorFlow: a `tf.function` with a GradientTape, as a callable."""
    import keras
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    device = "/GPU:0" if args.device == "gpu" else "/CPU:0"
    x, y = _synthetic(args)
    with tf.device(device):
        model = _build(args)
        opt = keras.optimizers.Adam(1e-3, epsilon=1e-8)
        opt.build(model.trainable_variables)
        x, y = tf.constant(x), tf.constant(y)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(model(x, training=True) - y)) / args.batch_size
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return lambda: step().numpy()


def torch_step(args):
    """The paper's construction: a Python loop over one PyTorch module per neuron."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    from ..models import resolve

    o = resolve(args.model)
    c, k = o["channels"], o["beta_kernel"]

    class SA(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k = nn.Conv2d(c, 5, 1), nn.Conv2d(c, 5, 1)
            self.v, self.o = nn.Conv2d(c, 5, 1), nn.Conv2d(5, c, 1)
            self.gamma = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            b, ch, h, w = x.shape
            q = self.q(x).view(b, -1, h * w).permute(0, 2, 1)
            a = torch.softmax(torch.bmm(q, self.k(x).view(b, -1, h * w)), dim=-1)
            out = torch.bmm(self.v(x).view(b, -1, h * w), a.permute(0, 2, 1))
            return self.gamma * self.o(out.view(b, 5, h, w)) + x

    def one():
        layers = [nn.Conv2d(1, c, 5), nn.MaxPool2d(2), nn.BatchNorm2d(c), nn.Sigmoid(),
                  nn.Dropout2d(0.3), nn.Conv2d(c, c, 5), nn.MaxPool2d(2), nn.BatchNorm2d(c),
                  nn.Sigmoid(), nn.Dropout2d(0.3)]
        if o["attention"]:
            layers += [SA(), nn.BatchNorm2d(c), nn.Sigmoid(), nn.Dropout2d(0.3)]
        size = 9 - 2 * (k - 1)
        layers += [nn.Conv2d(c, c, k), nn.BatchNorm2d(c), nn.Sigmoid(), nn.Dropout2d(0.3),
                   nn.Conv2d(c, c, k), nn.BatchNorm2d(c), nn.Sigmoid(), nn.Flatten(),
                   nn.Linear(c * size * size, 1)]
        return nn.Sequential(*layers)

    nets = nn.ModuleList([one() for _ in range(args.neurons)])
    opt = torch.optim.Adam(nets.parameters(), 1e-3)
    x = torch.randn(args.batch_size, 1, 50, 50)
    y = torch.randn(args.batch_size, args.neurons)

    def step():
        opt.zero_grad()
        pred = torch.stack([net(x) for net in nets], dim=1).reshape(args.batch_size, -1)
        loss = nn.functional.mse_loss(pred, y)
        loss.backward()
        opt.step()

    return step


def check_args(args):
    """Refuse an unknown --model and --device gpu without a GPU (ConfigError, one line)."""
    from .. import models

    if args.model not in models.names():
        raise ConfigError(f"--model: unknown model {args.model!r}; known: "
                          f"{', '.join(models.names())}")
    if args.device == "gpu":
        import keras

        if keras.backend.backend() == "jax":
            import jax

            try:
                jax.devices("gpu")
            except RuntimeError:
                raise ConfigError("--device gpu: no GPU visible to JAX") from None
        else:
            import tensorflow as tf

            if not tf.config.list_physical_devices("GPU"):
                raise ConfigError("--device gpu: no GPU visible to TensorFlow")
    if args.baseline == "torch":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise ConfigError("--baseline torch: needs PyTorch (pip install 'tfsacnn[torch]')")


def main(args):
    import keras

    check_args(args)
    flops = forward_flops(args.model) * TRAIN_FACTOR
    step_s = _time(keras_step(args), args.steps, args.warmup)
    base = [_time_torch_in_child(args)] if args.baseline == "torch" else []
    rate = args.neurons * args.batch_size / step_s
    out = {
        "model": args.model, "core": args.core, "backend": keras.backend.backend(),
        "device": args.device,
        "precision": args.precision,
        "n_neurons": args.neurons, "batch_size": args.batch_size, "steps": args.steps,
        "conv_implementation": args.conv_implementation,
        "neuron_images_per_s": round(rate, 1), "step_ms_median": round(step_s * 1e3, 2),
        "train_mflop_per_neuron_image": round(flops / 1e6, 2),
        "gflops_per_s": round(rate * flops / 1e9, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1), "cpu_count": os.cpu_count(),
    }
    epoch_s = -(-args.site_images // args.batch_size) * step_s
    out["epoch_s_extrapolated"] = round(epoch_s, 1)  # these neurons, --site-images images
    out["site_minutes_extrapolated"] = round(epoch_s * args.site_epochs / 60, 1)
    site = args.site_neurons * args.site_images * args.site_epochs       # neuron-images
    out["projected_site"] = (f"{args.site_neurons} neurons x {args.site_images} images x "
                             f"{args.site_epochs} epochs")
    out["projected_site_minutes"] = round(site / rate / 60, 1)
    if args.core == "shared":
        out["note"] = "gflops_per_s counts a per-neuron network per neuron (as independent)"
    if base:
        t = base[0]
        out["baseline"] = "pytorch per-neuron module loop (paper's construction)"
        out["baseline_neuron_images_per_s"] = round(args.neurons * args.batch_size / t, 1)
        out["speedup_vs_baseline"] = round(t / step_s, 2)
    print(json.dumps(out))
    return out
