"""The package as users get it: a wheel built from this checkout, installed non-editable
into a fresh virtual environment, run from a directory outside the checkout.

The fresh environment takes the dependencies (TensorFlow, Keras, ...) from this one
through a path entry, so the test costs seconds rather than a 600 MB download, but
`tfsacnn` itself comes only from the wheel: its configs, the demo and the commands must
work without the repository.
"""
import os
import subprocess
import sys
import sysconfig
import venv

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def dependency_paths():
    """This environment's site-packages folders (its own, and any a .pth file added)."""
    own = sysconfig.get_paths()["purelib"]
    return [own] + [p for p in sys.path if p.endswith("site-packages") and p != own]


def _run(cmd, cwd, env):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, tfsacnn command, env) of a venv holding the wheel and nothing else of ours."""
    root = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(root / "dist"), str(REPO)], cwd=root, env=env)
    wheels = list((root / "dist").glob("tfsacnn-*.whl"))
    assert len(wheels) == 1, wheels
    target = root / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=root, env=env).strip()
    # the dependencies of this environment, after the venv's own site-packages
    with open(os.path.join(site, "zz_dependencies.pth"), "w") as f:
        f.write("".join(p + "\n" for p in dependency_paths()))
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])],
         cwd=root, env=env)
    return python, target / "bin" / "tfsacnn", env, root


def test_wheel_holds_the_package_not_the_checkout(installed):
    python, _, env, root = installed
    where = _run([str(python), "-c", "import tfsacnn, data_prep; "
                  "print(tfsacnn.__file__); print(data_prep.__file__)"], cwd=root, env=env)
    assert str(REPO) not in where and where.count(str(root / "venv")) == 2, where
    shipped = _run([str(python), "-c", "from tfsacnn import config; print(*config.shipped())"],
                   cwd=root, env=env).split()
    assert {"demo", "ff_sa_cnn", "ff_cnn", "rf_sa_cnn", "incremental/1_rf_cnn"} <= set(shipped)
    sample = _run([str(python), "-c", "from data_prep.reference import real_sample; "
                   "print(real_sample().shape)"], cwd=root, env=env)
    assert sample.strip() == "(1000, 10)"


def test_shipped_configs_from_the_repository_root(installed):
    """From the repository root the checkout's tfsacnn/ shadows the wheel's (the device
    script runs so); the shipped configs are still found, in the checkout's configs/."""
    python, _, env, _ = installed
    out = _run([str(python), "-c", "from tfsacnn import config; print(config.__file__); "
                "print(config.locate('ff_cnn')); print(*config.shipped())"], cwd=REPO, env=env)
    where, found, shipped = out.splitlines()[-3:]
    assert where.startswith(str(REPO)), where
    assert found == str(REPO / "configs" / "ff_cnn.yaml")
    assert {"demo", "ff_cnn", "incremental/1_rf_cnn"} <= set(shipped.split())


def test_wheel_fits_a_shipped_config_by_name(installed):
    python, tfsacnn, env, root = installed
    work = root / "work"
    work.mkdir()
    _run([str(tfsacnn), "data", "synthesize", "--out", "site", "--neurons", "2", "--train",
          "200", "--val", "100", "--test", "0", "--repeats", "2", "--quiet"], cwd=work, env=env)
    out = _run([str(tfsacnn), "fit", "--config", "ff_sa_cnn", "--data", "site", "--out", "run",
                "--set", "train.epochs=1", "--set", "model.overrides={channels: 4}",
                "--set", "eval.tuning_curve_neurons=0"], cwd=work, env=env)
    assert "best epoch" in out
    for name in ("config.yaml", "metrics.json", "model.keras", "saved_model/saved_model.pb"):
        assert (work / "run" / name).exists(), name


def test_wheel_runs_the_demo(installed):
    """`python -m tfsacnn.fit` with no arguments (here one epoch): synthesise, train, export."""
    python, _, env, root = installed
    work = root / "demo"
    work.mkdir()
    out = _run([str(python), "-m", "tfsacnn.fit", "--set", "train.epochs=1"], cwd=work, env=env)
    assert (work / "data" / "demo" / "manifest.json").exists()
    runs = list((work / "runs").glob("ff_sa_cnn-*"))
    assert len(runs) == 1 and (runs[0] / "metrics.json").exists(), out
