"""The prepared GPU call (benchmarks/gpu_paper_scale.sh run) at toy size, the device's way:
the tfsacnn wheel installed non-editable by the script itself (into SITE, on PYTHONPATH),
run from the repository root (so the checkout's tfsacnn/ shadows the wheel's), under
KERAS_BACKEND=jax on the CPU, with `import tensorflow` failing (tests/no_tensorflow).

The venv takes the other dependencies (Keras, JAX, PyTorch) from this environment through
a path entry, as tests/test_wheel.py does."""
import json
import os
import subprocess
import sys
import tarfile
import venv

import pytest
import yaml

from tests.conftest import REPO
from tests.test_wheel import dependency_paths

pytestmark = pytest.mark.slow

SCRIPT = REPO / "benchmarks" / "gpu_paper_scale.sh"
ARCHIVED = "studies/sa_vs_cnn/results/gpu"
UNITS = ["gated_seed410", "fixed_seed400"]


def tiny_config(path):
    """The GPU study's pre-registration at toy size: two units, 3 neurons, 1 epoch."""
    exp = yaml.safe_load((REPO / "studies" / "sa_vs_cnn" / "sa_vs_cnn_gpu.yaml").read_text())
    exp["sites"].update(seeds={"fixed": [400], "gated": [410]}, neurons=3,
                        surround_fraction=0.67, train=200, val=60, test=60, repeats=3)
    exp["unit_order"] = UNITS
    exp["train"]["epochs"] = 1
    exp["model"]["overrides"] = {"channels": 4}
    exp["eval"]["top_k"] = 3
    exp["causal"]["triples"] = 20
    exp["statistics"]["bootstrap_resamples"] = 200
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def test_device_script_runs_the_toy_study_from_the_wheel_without_tensorflow(tmp_path):
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    whl = tmp_path / "whl"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(whl), str(REPO)],
                   cwd=tmp_path, env=env, check=True, capture_output=True)
    (whl / "COMMIT").write_text("0123abc-toy\n")       # what `prepare` records
    venv.EnvBuilder(with_pip=True).create(tmp_path / "venv")
    python = tmp_path / "venv" / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "zz_dependencies.pth"), "w") as f:
        f.write("".join(p + "\n" for p in dependency_paths()))
    out, results = tmp_path / "out", tmp_path / "results"
    env.update(PYTHON=str(python), WHL=str(whl), SITE=str(tmp_path / "site"),
               PYTHONPATH=str(REPO / "tests" / "no_tensorflow"), DEVICE="cpu",
               CONFIG=str(tiny_config(tmp_path / "tiny.yaml")), RESULTS=str(results),
               WORK=str(tmp_path / "work"), OUT=str(out), TIME_LIMIT_S="600",
               BENCH_NEURONS="1", BENCH_STEPS="1", CONV_NEURONS="2", CONV_STEPS="1", BATCH="4")
    env.pop("TFSACNN_COMMIT", None)
    done = subprocess.run(["bash", str(SCRIPT), "run"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    log = (out / "log.txt").read_text()
    assert done.returncode == 0, log[-4000:] + done.stderr[-2000:]
    assert f"{tmp_path}/site/tfsacnn" not in log and "TensorFlow" not in log.split("\n")[0]
    bench = json.loads((out / "bench.json").read_text())
    assert bench["backend"] == "jax" and bench["tfsacnn_device"] == "cpu:0 (cpu)"
    assert bench["baseline_device"] == "cpu:0 (cpu)" and bench["projected_site_minutes"] > 0
    conv = json.loads((out / "conv.json").read_text())
    assert f"per-neuron conv: {conv['choice']} (the faster in the trial" in log
    assert (out / "conv.env").read_text() == f"TFSACNN_CONV_IMPLEMENTATION={conv['choice']}\n"
    done_units = sorted(p.name for p in results.glob("*.json"))
    assert f"{UNITS[0]}.json" in done_units         # the first unit in the registered order
    with tarfile.open(out / "results.tgz") as tar:  # every record, at its place in the repo
        assert sorted(tar.getnames()) == sorted(
            [f"{ARCHIVED}/{u}" for u in done_units]
            + [f"{ARCHIVED}/{u.removesuffix('.json')}.sealed.npz" for u in done_units])
        record = json.load(tar.extractfile(f"{ARCHIVED}/{UNITS[0]}.json"))
    assert record["commit"] == "0123abc-toy"
    assert json.loads((results / f"{UNITS[0]}.json").read_text()) == record
    # the wheel went where the script put it, and was shadowed by the checkout
    assert (tmp_path / "site" / "tfsacnn" / "config.py").exists()
