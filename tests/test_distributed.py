"""tf.distribute: MirroredStrategy over two logical CPUs, and MultiWorkerMirroredStrategy
with two worker processes on 127.0.0.1, reach the single-device run's metrics.

Tolerance: each neuron's CORR within 2e-3, and PT_J / PT_S within 0.1 (one image of
top_k = 10), on val and test. The runs use dropout 0, because dropout masks are drawn per
replica and so cannot match a single device's; everything else (the global batch, the
loss normalised by the global batch, synchronised BatchNorm) is the same computation up
to the order of floating-point sums.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

ARGS = ["--config", str(REPO / "configs/ff_sa_cnn.yaml"), "--set", "train.epochs=2",
        "--set", "model.overrides={channels: 6, dropout: 0.0}",
        "--set", "eval.tuning_curve_neurons=0"]


@pytest.fixture(scope="module")
def single(site, tmp_path_factory):
    from tfsacnn.cli import fit

    out = tmp_path_factory.mktemp("dist") / "single"
    assert fit.main([*ARGS, "--data", str(site), "--out", str(out), "--strategy", "default"]) == 0
    return json.loads((out / "metrics.json").read_text())


def _worker(n_cpus, args, env=None):
    return subprocess.Popen([sys.executable, str(REPO / "tests" / "dist_worker.py"), str(n_cpus),
                             *args], cwd=REPO, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _assert_close(metrics, ref):
    for split in ("val", "test"):
        a, b = metrics["splits"][split]["per_neuron"], ref["splits"][split]["per_neuron"]
        np.testing.assert_allclose(a["corr"], b["corr"], atol=2e-3, err_msg=split)
        np.testing.assert_allclose(a["pt_j"], b["pt_j"], atol=0.1 + 1e-9, err_msg=split)
        np.testing.assert_allclose(a["pt_s"], b["pt_s"], atol=0.1 + 1e-9, err_msg=split)


def test_mirrored_two_logical_cpus_matches_single_device(site, single, tmp_path):
    out = tmp_path / "mirrored"
    p = _worker(2, [*ARGS, "--data", str(site), "--out", str(out), "--strategy", "mirrored"])
    log = p.communicate(timeout=600)[0]
    assert p.returncode == 0, log[-3000:]
    assert "with 2 replica(s)" in log
    _assert_close(json.loads((out / "metrics.json").read_text()), single)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multiworker_two_processes_matches_single_device(site, single, tmp_path):
    out = tmp_path / "multiworker"
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers},
                                "task": {"type": "worker", "index": i}})
        procs.append(_worker(1, [*ARGS, "--data", str(site), "--out", str(out),
                                 "--strategy", "multiworker"], {"TF_CONFIG": tf_config}))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=600)[0])
    finally:
        for p in procs:
            p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    assert "with 2 replica(s)" in logs[0]
    assert not list(tmp_path.glob("multiworker.worker-tmp-*"))  # the other worker cleaned up
    _assert_close(json.loads((out / "metrics.json").read_text()), single)
