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


def _one_line_error(argv, capsys):
    rc = bench.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    return err[0]


def test_bench_train_names_the_devices_and_projects_the_site(capsys):
    """Both sides on the CPU here (no GPU): the JSON line names where each ran, and the
    300-neuron site is projected from the measured rates."""
    rc = bench.main(["train", "--model", "ff_cnn", "--neurons", "1", "--batch-size", "2",
                     "--steps", "1",
                     "--warmup", "0", "--device", "cpu", "--baseline", "torch"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0
    assert result["device"] == "cpu" and result["tfsacnn_device"] == "cpu:0 (cpu)"
    assert result["baseline_device"] == "cpu:0 (cpu)"
    rate = 1 * 2 / (result["step_ms_median"] / 1e3)            # neuron-images/s
    minutes = 300 * 34000 * 50 / rate / 60
    assert abs(result["projected_site_minutes"] - minutes) <= 0.01 * minutes
    speedup = result["speedup_vs_baseline"]                     # rounded to 0.01
    baseline = minutes * speedup
    assert abs(result["baseline_projected_site_minutes"] - baseline) <= \
        baseline * (0.01 + 0.006 / speedup)


def test_bench_train_device_gpu_without_one_is_refused(capsys):
    line = _one_line_error(["train", "--neurons", "1", "--steps", "1", "--device", "gpu",
                            "--baseline", "torch"], capsys)
    assert line == ("error: --device gpu: no GPU visible to JAX or PyTorch "
                    "(the --baseline torch side)")
    line = _one_line_error(["conv", "--neurons", "2", "--device", "gpu"], capsys)
    assert line == "error: --device gpu: no GPU visible to JAX"


def test_device_auto_falls_back_to_cpu_and_a_cpu_side_is_refused_under_gpu():
    import argparse

    import pytest

    from tfsacnn.bench import train
    from tfsacnn.errors import ConfigError

    args = argparse.Namespace(model="ff_cnn", device="auto", baseline="none")
    train.check_args(args)
    assert args.device == "cpu"
    gpu = argparse.Namespace(device="gpu")
    train.check_ran_on(gpu, ("tfsacnn", "gpu:0 (NVIDIA H100)"),
                       ("the baseline", "cuda:0 (NVIDIA H100)"))
    with pytest.raises(ConfigError, match="the baseline ran on cpu:0"):
        train.check_ran_on(gpu, ("tfsacnn", "gpu:0 (NVIDIA H100)"),
                           ("the baseline", "cpu:0 (cpu)"))
    with pytest.raises(ConfigError, match="tfsacnn ran on .*CPU:0"):
        train.check_ran_on(gpu, ("tfsacnn", "/job:localhost/replica:0/task:0/device:CPU:0"))
    train.check_ran_on(argparse.Namespace(device="cpu"), ("tfsacnn", "cpu:0 (cpu)"))


def test_bench_conv_picks_the_fastest_and_auto_runs_it(tmp_path, capsys, monkeypatch):
    from tfsacnn.nn import layers

    env_file = tmp_path / "conv.env"
    rc = bench.main(["conv", "--model", "ff_cnn", "--neurons", "2", "--batch-size", "2", "--steps", "1",
                     "--warmup", "0", "--device", "cpu", "--env-file", str(env_file)])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rates = result["neuron_images_per_s"]
    assert rc == 0 and set(rates) == {"grouped", "map"} and min(rates.values()) > 0
    assert result["choice"] == max(rates, key=rates.get)
    assert result["tfsacnn_device"] == "cpu:0 (cpu)"
    assert env_file.read_text() == f"TFSACNN_CONV_IMPLEMENTATION={result['choice']}\n"
    # NeuronConv2D's "auto" runs what the variable names, else map on a CPU
    monkeypatch.delenv("TFSACNN_CONV_IMPLEMENTATION", raising=False)
    conv = layers.NeuronConv2D(3, 5, n_neurons=2)
    assert conv._impl() == "map"
    monkeypatch.setenv("TFSACNN_CONV_IMPLEMENTATION", "grouped")
    assert conv._impl() == "grouped"
    assert layers.NeuronConv2D(3, 5, n_neurons=2, implementation="map")._impl() == "map"
    monkeypatch.setenv("TFSACNN_CONV_IMPLEMENTATION", "einsum")
    import pytest

    from tfsacnn.errors import ConfigError

    with pytest.raises(ConfigError, match="TFSACNN_CONV_IMPLEMENTATION=einsum: expected"):
        conv._impl()
