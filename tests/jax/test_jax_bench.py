"""`python -m tfsacnn.bench train` under KERAS_BACKEND=jax (the jax.jit stateless step)."""
import json

import tfsacnn.bench as bench


def test_bench_train_runs_under_jax(capsys):
    rc = bench.main(["train", "--model", "ff_sa_cnn", "--neurons", "2", "--batch-size", "4",
                     "--steps", "2", "--warmup", "1"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(out) == 1, out
    result = json.loads(out[0])
    assert result["backend"] == "jax" and result["n_neurons"] == 2
    assert result["neuron_images_per_s"] > 0 and result["step_ms_median"] > 0
