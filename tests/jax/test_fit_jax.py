"""`tfsacnn.fit` under KERAS_BACKEND=jax: the same run directory as under TensorFlow, and
the same numbers when both start from the same weights and read the same batches.

The comparison: one TensorFlow epoch makes initial weights (run `init`); then both
backends train 2 more epochs from them (`train.init_from`) with dropout 0 and the train
split read in file order (`train.shuffle: false`), so the two runs are one computation up
to floating-point summation order and the convolution algorithms. Tolerance: each
neuron's val/test CORR within 5e-4 (measured: 4.5e-5 at most) and PT_J within 0.1 (one
image of top_k = 10). Different shuffles or dropout masks (the backends' RNGs
differ) would make the runs differ by far more, so those are switched off rather than
absorbed by a loose tolerance.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = ["--set", "model.overrides={channels: 4, dropout: 0.0}", "--set", "train.shuffle=false",
        "--set", "eval.tuning_curve_neurons=1", "--neurons", "0:2"]


def _tf(args, cwd):
    """Run a command under the TensorFlow backend in its own process."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(site, the TF run, the JAX run) trained from the same initial weights."""
    from tfsacnn.cli import fit

    from data_prep.synthesize import synthesize

    root = tmp_path_factory.mktemp("jaxfit")
    site = root / "site"           # written here, without TensorFlow; read by both backends
    synthesize(site, neurons=3, train=200, val=100, test=100, repeats=2, seed=0, progress=False)
    _tf(["tfsacnn.fit", "--config", "ff_sa_cnn", "--data", str(site), "--out",
         str(root / "init"), "--set", "train.epochs=1", *ARGS], root)
    common = ["--config", "ff_sa_cnn", "--data", str(site), "--set", "train.epochs=2",
              "--set", f"train.init_from={root / 'init'}", *ARGS]
    _tf(["tfsacnn.fit", *common, "--out", str(root / "tf")], root)
    assert fit.main([*common, "--out", str(root / "jax"), "--quiet"]) == 0
    return site, root / "tf", root / "jax"


def test_backend_is_jax_and_tensorflow_never_imported(runs):
    import keras

    assert keras.backend.backend() == "jax"
    assert "tensorflow" not in sys.modules


def test_run_directory_is_complete(runs):
    _, _, run = runs
    for name in ("config.yaml", "metrics.json", "metrics.csv", "model.keras",
                 "checkpoints/last.npz", "tensorboard"):
        assert (run / name).exists(), name
    assert not (run / "saved_model").exists()        # written later by tfsacnn export
    m = json.loads((run / "metrics.json").read_text())
    assert m["neurons"] == [0, 1] and set(m["splits"]) == {"val", "test"}
    ckpt = np.load(run / "checkpoints" / "last.npz")
    assert int(ckpt["epoch"]) == 2 and "model/alpha_cpb1_conv/kernel" in ckpt.files
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_metrics_match_tensorflow_from_the_same_weights(runs):
    _, tf_run, jax_run = runs
    a = json.loads((tf_run / "metrics.json").read_text())
    b = json.loads((jax_run / "metrics.json").read_text())
    assert a["best_epoch"] == b["best_epoch"]
    for split in ("val", "test"):
        pa, pb = a["splits"][split]["per_neuron"], b["splits"][split]["per_neuron"]
        np.testing.assert_allclose(pa["corr"], pb["corr"], atol=5e-4)
        np.testing.assert_allclose(pa["pt_j"], pb["pt_j"], atol=0.1 + 1e-9)


def test_a_tensorflow_checkpoint_resumes_under_jax(runs, tmp_path):
    """Checkpoints store numpy arrays by variable name, so either backend reads them."""
    import shutil

    from tfsacnn.cli import fit

    _, run, _ = runs
    again = tmp_path / "again"
    shutil.copytree(run, again)
    (again / "metrics.json").unlink()
    assert fit.main(["--out", str(again), "--resume", "--set", "train.epochs=3", "--quiet"]) == 0
    m = json.loads((again / "metrics.json").read_text())
    assert int(np.load(again / "checkpoints" / "last.npz")["epoch"]) == 3
    assert all(1 <= e <= 3 for e in m["best_epoch"])


def test_data_parallel_over_two_devices_matches_one(runs, tmp_path):
    """`--strategy mirrored` under JAX: keras.distribution.DataParallel over two (CPU)
    devices gives the one-device run's metrics. Batch 45 does not split over two devices,
    so those batches are replicated instead; both paths are exercised."""
    from tfsacnn.cli import fit

    site, _, _ = runs
    init = site.parent / "init"
    common = ["--config", "ff_sa_cnn", "--data", str(site), "--set", "train.epochs=2",
              "--set", f"train.init_from={init}", "--set", "train.batch_size=45", *ARGS]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    done = subprocess.run([sys.executable, "-m", "tfsacnn.fit", *common, "--strategy", "mirrored",
                           "--out", str(tmp_path / "two")], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "with 2 replica(s), jax backend" in done.stdout
    assert fit.main([*common, "--out", str(tmp_path / "one"), "--quiet"]) == 0
    a = json.loads((tmp_path / "two" / "metrics.json").read_text())
    b = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert a["best_epoch"] == b["best_epoch"]
    for split in ("val", "test"):
        np.testing.assert_allclose(a["splits"][split]["per_neuron"]["corr"],
                                   b["splits"][split]["per_neuron"]["corr"], atol=2e-3)
