"""Keras' JAX backend: runs the sub-suite tests/jax under KERAS_BACKEND=jax in a subprocess.

This (TensorFlow) process writes what the JAX side compares against into .npz files: for
every variant and both cores, weights, images, TensorFlow's outputs (inference and
training mode), gradients and updated BatchNorm statistics; and a small dataset with
tf.data's arrays. The sub-suite must pass; its tail is printed when it does not.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, randomize_statistics
from tests.test_models import spread_weights
from tfsacnn import models

N_NEURONS, N_IMAGES = 2, 4
CORES = ("independent", "shared")


def write_model_fixture(path, name, core, seed=0):
    """`name`/`core` with random weights: its weights and TensorFlow's results -> `path`."""
    import tensorflow as tf

    import keras

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    m = models.build(name, n_neurons=N_NEURONS, core=core, dropout=0.0)
    randomize_statistics(m, seed)
    spread_weights(m)
    if models.has_attention(m):
        gamma = m.get_layer("self_attention").gamma
        gamma.assign(rng.uniform(0.5, 1.5, gamma.shape).astype("float32"))
    weights = m.get_weights()
    x = rng.normal(size=(N_IMAGES, 50, 50, 1)).astype("float32")
    target = rng.normal(size=(N_IMAGES, N_NEURONS)).astype("float32")
    y_eval = np.asarray(m(x, training=False))
    with tf.GradientTape() as tape:
        y_train = m(x, training=True)
        loss = tf.reduce_sum(tf.square(y_train - target))
    grads = tape.gradient(loss, m.trainable_variables)
    arrays = {f"w{i}": w for i, w in enumerate(weights)}
    arrays.update({f"g{i}": np.asarray(g) for i, g in enumerate(grads)})
    arrays.update({f"s{i}": np.asarray(v) for i, v in enumerate(m.non_trainable_variables)})
    np.savez(path, x=x, target=target, y_eval=y_eval, y_train=np.asarray(y_train),
             loss=np.asarray(loss), **arrays)


def write_data_fixture(directory):
    """A 3-shard dataset with repeats, and tf.data's arrays of it (neurons '3,0')."""
    from data_prep.writer import write_dataset
    from tfsacnn.data import tfdata

    rng = np.random.default_rng(1)
    split = {"images": rng.random((7, 6, 6), dtype=np.float32),
             "responses": rng.random((7, 4), dtype=np.float32),
             "repeats": rng.random((7, 2, 4), dtype=np.float32)}
    write_dataset(directory / "ds", {"train": split}, shard_size=3, progress=False)
    images, responses, repeats = tfdata.load_numpy(directory / "ds", "train", neurons="3,0",
                                                   with_repeats=True)
    np.savez(directory / "ds.npz", images=images, responses=responses, repeats=repeats)


def write_insilico_fixture(directory):
    """A tiny simulated site, a run of each core, and TensorFlow's in-silico results on
    them (tests/jax/test_insilico_jax.py runs the same under JAX)."""
    import json

    from data_prep.synthesize import synthesize
    from tests.conftest import calibrate_statistics
    from tests.test_insilico import FAST, make_run
    from tests.jax.test_insilico_jax import CLASSIC
    from tfsacnn.insilico import load_twin
    from tfsacnn.insilico.experiments import run_experiments

    import keras

    keras.utils.set_random_seed(0)          # the same models whatever ran before
    site = synthesize(directory / "insilico_site", neurons=2, train=8, val=16, repeats=2,
                      seed=1, surround_fraction=0.5, progress=False)
    (directory / "insilico_settings.json").write_text(json.dumps(FAST))
    for core in CORES:
        run, model = make_run(directory / "insilico_runs", site, core, neurons=(0, 1))
        twin = load_twin(run)
        calibrate_statistics(model, twin.preprocess(twin.dataset_images))
        model.save(run / "model.keras")
        twin = load_twin(run)
        assert twin.dataset_responses().std(0).min() > 0.01        # well-conditioned
        res = run_experiments(twin, twin, names=CLASSIC, settings=FAST)
        arrays = {f"{e}/{q}": np.asarray(v, np.float64)
                  for e, r in res.items() for q, v in r["per_neuron"].items()}
        arrays.update({f"{e}/curve/{c}": np.asarray(v) for e, r in res.items()
                       for c, v in r.get("curves", {}).items()})
        np.savez(directory / f"insilico-{core}.npz", run=str(run),
                 dataset_responses=twin.dataset_responses(), **arrays)


def start_sub_suite(directory):
    """Write the fixtures into `directory` and start tests/jax under KERAS_BACKEND=jax in
    the background -> (Popen, log path). tests/conftest.py starts it at the first test of
    a session that will run `test_jax_sub_suite_passes`, so that it runs beside the
    TensorFlow tests (on another core) instead of after them."""
    for name in models.names():
        for core in CORES:
            write_model_fixture(directory / f"{name}-{core}.npz", name, core)
    write_data_fixture(directory)
    write_insilico_fixture(directory)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TFSACNN_JAX_FIXTURES": str(directory),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = directory / "jax-sub-suite.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 "-rs", "--durations=12", "tests/jax"], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    return proc, log


def test_jax_sub_suite_passes(jax_sub_suite):
    proc, log = jax_sub_suite
    try:
        proc.wait(timeout=900)
    finally:
        proc.kill()
    text = log.read_text()
    tail = text[-6000:]
    print(tail)
    assert proc.returncode == 0, tail
    assert " passed" in text and "skipped" not in text, tail
