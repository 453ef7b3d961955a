"""`python -m tfsacnn.bench train`: speed of full training steps (forward, backward, Adam).

Times `--steps` steps on synthetic tensors after warm-up, for `--neurons` neurons of
`--model`, and prints one JSON line: backend, neuron_images_per_s, step_ms_median,
peak_rss_mb, gflops_per_s (against the analytic training cost, 3x the forward FLOPs of
`forward_flops`), n_neurons, and the projected minutes of a `--site-neurons` (300) x
`--site-images` (34k) x `--site-epochs` (50) site at the measured rate. With `--baseline
torch` (needs the `torch` extra) the same run also times the paper's construction, a
PyTorch loop over one module per neuron (in a child process, right after tfsacnn's
steps), and reports the ratio.

`--device gpu|cpu|auto` places both sides: tfsacnn on `jax.devices("gpu")` (or TF's
/GPU:0), the PyTorch loop's modules and tensors on CUDA, its steps timed up to
`torch.cuda.synchronize()`. `tfsacnn_device` and `baseline_device` name where each side
ran; with `--device gpu` a side that ran on a CPU (or a GPU missing) is an error, before
any JSON line. `auto` takes the GPU where every side sees one.

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
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu",
                   help="where both sides run (gpu: refused when a side sees none or ran on "
                        "a CPU; auto: gpu where every side sees one)")
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


def torch_pool():
    """A one-process pool for the baseline: TF's and PyTorch's thread pools in one process
    slow each other down by up to 20x on 2 cores."""
    import multiprocessing

    return multiprocessing.get_context("spawn").Pool(1)


def torch_has_gpu():
    import torch

    return torch.cuda.is_available()


def _torch_time(args):
    """(median seconds per step, the device its modules ran on) of the baseline."""
    step = torch_step(args)
    return _time(step, args.steps, args.warmup), step.device


def keras_has_gpu():
    """True if the Keras backend (JAX or TensorFlow) sees a GPU."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        try:
            return bool(jax.devices("gpu"))
        except RuntimeError:
            return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _describe_jax(device):
    """'gpu:0 (NVIDIA H100 80GB HBM3)' / 'cpu:0 (cpu)'."""
    return f"{device.platform}:{device.id} ({device.device_kind})"


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
    ran_on = set()
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
        ran_on.update(_describe_jax(d) for d in loss.devices())
        return float(loss)  # waits for the step

    run.device = lambda: ", ".join(sorted(ran_on)) or _describe_jax(device)
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

        run = lambda: step().numpy()  # noqa: E731
        run.device = lambda: model.trainable_variables[0].value.device
        return run


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

    if args.device == "gpu" and not torch.cuda.is_available():
        raise ConfigError("--device gpu: no GPU visible to PyTorch (the --baseline torch side)")
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    nets = nn.ModuleList([one() for _ in range(args.neurons)]).to(device)
    opt = torch.optim.Adam(nets.parameters(), 1e-3)
    x = torch.randn(args.batch_size, 1, 50, 50, device=device)
    y = torch.randn(args.batch_size, args.neurons, device=device)

    def step():
        opt.zero_grad()
        pred = torch.stack([net(x) for net in nets], dim=1).reshape(args.batch_size, -1)
        loss = nn.functional.mse_loss(pred, y)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()  # the step's kernels are queued, not done, until here

    where = next(nets.parameters()).device
    step.device = f"{where.type}:{where.index or 0} (" + (
        torch.cuda.get_device_name(where) if where.type == "cuda" else "cpu") + ")"
    return step


def check_args(args, pool=None):
    """Refuse an unknown --model and --device gpu without a GPU (ConfigError, one line);
    resolve --device auto to gpu or cpu (in place). `pool` (torch_pool()) asks the
    baseline's process whether PyTorch sees a GPU."""
    import keras

    from .. import models

    if args.model not in models.names():
        raise ConfigError(f"--model: unknown model {args.model!r}; known: "
                          f"{', '.join(models.names())}")
    if args.baseline == "torch":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise ConfigError("--baseline torch: needs PyTorch (pip install 'tfsacnn[torch]')")
    if args.device == "cpu":
        return
    backend = {"jax": "JAX"}.get(keras.backend.backend(), "TensorFlow")
    sides = [(backend, keras_has_gpu())]
    if args.baseline == "torch" and pool is not None:
        sides.append(("PyTorch (the --baseline torch side)", pool.apply(torch_has_gpu)))
    missing = [name for name, has in sides if not has]
    if args.device == "auto":
        args.device = "cpu" if missing else "gpu"
    elif missing:
        raise ConfigError(f"--device gpu: no GPU visible to {' or '.join(missing)}")


def check_ran_on(args, *where):
    """With --device gpu, refuse (ConfigError) when a side's device names a CPU."""
    if args.device != "gpu":
        return
    on_cpu = [f"{side} ran on {device}" for side, device in where if "cpu" in device.lower()]
    if on_cpu:
        raise ConfigError(f"--device gpu: {'; '.join(on_cpu)}")


def resolved_conv_implementation(args):
    """The per-neuron conv that runs: the flag, or what "auto" resolves to."""
    from ..nn.layers import auto_conv_implementation

    if args.conv_implementation != "auto":
        return args.conv_implementation
    return auto_conv_implementation()


def time_steps(args):
    """(median seconds per step, the device it ran on) of tfsacnn's step."""
    step = keras_step(args)
    return _time(step, args.steps, args.warmup), str(step.device())


def main(args):
    import contextlib

    import keras

    with (torch_pool() if args.baseline == "torch" else contextlib.nullcontext()) as pool:
        check_args(args, pool)
        flops = forward_flops(args.model) * TRAIN_FACTOR
        step_s, ran_on = time_steps(args)
        base = [pool.apply(_torch_time, (args,))] if pool is not None else []
    check_ran_on(args, ("tfsacnn", ran_on), *[("the baseline", b[1]) for b in base])
    rate = args.neurons * args.batch_size / step_s
    out = {
        "model": args.model, "core": args.core, "backend": keras.backend.backend(),
        "device": args.device, "tfsacnn_device": ran_on,
        "precision": args.precision,
        "n_neurons": args.neurons, "batch_size": args.batch_size, "steps": args.steps,
        "conv_implementation": resolved_conv_implementation(args),
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
        t, device = base[0]
        out["baseline"] = "pytorch per-neuron module loop (paper's construction)"
        out["baseline_device"] = device
        base_rate = args.neurons * args.batch_size / t
        out["baseline_neuron_images_per_s"] = round(base_rate, 1)
        out["baseline_projected_site_minutes"] = round(site / base_rate / 60, 1)
        out["speedup_vs_baseline"] = round(t / step_s, 2)
    print(json.dumps(out))
    return out
