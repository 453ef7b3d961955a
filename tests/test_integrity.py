"""A run is one record: its files agree with the data and the model they name, every writer
takes the run's lock, and temporaries of a killed process are cleaned up."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import REPO
from tfsacnn import runs
from tfsacnn.cli import fit

pytestmark = pytest.mark.slow

ONE_EPOCH = ["--set", "train.epochs=1", "--set", "eval.tuning_curve_neurons=0",
             "--set", "model.overrides={channels: 6}"]


def _fit(data, out, *extra):
    return fit.main(["--config", str(REPO / "configs/ff_sa_cnn.yaml"), "--data", str(data),
                     "--out", str(out), *ONE_EPOCH, *extra])


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(site, tmp_path_factory):
    """(run, its dataset): a 1-epoch run on a copy of the tiny site."""
    root = tmp_path_factory.mktemp("integrity")
    data = root / "data"
    shutil.copytree(site, data)
    assert _fit(data, root / "run") == 0
    return root / "run", data


def _rebuilt(data, dst):
    """A copy of `data` whose manifest differs (as after a rebuild): another dataset."""
    shutil.copytree(data, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["rebuilt"] = True
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def _copy_run(run, dst, data=None):
    """A copy of `run`; with `data`, one whose config.yaml and metrics.json name it (as if
    its own dataset had been rebuilt in place)."""
    shutil.copytree(run, dst)
    if data is not None:
        cfg = yaml.safe_load((dst / "config.yaml").read_text())
        cfg["data"]["dir"] = str(data)
        (dst / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        m = json.loads((dst / "metrics.json").read_text())
        m["data"]["dir"] = str(data)
        (dst / "metrics.json").write_text(json.dumps(m))
    return dst


def _files(run):
    """{relative path: sha256} of every file in a run but its lock."""
    return {str(p.relative_to(run)): _sha(p) for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != runs.LOCK}


def _one_line(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


# ------------------------------------------------------------------ the run's record
def test_config_records_dataset_identity_and_epochs_trained(trained, tmp_path, monkeypatch):
    from tfsacnn.training import run as run_lib

    run, data = trained
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["manifest_sha256"] == _sha(data / "manifest.json")
    assert cfg["train"]["epochs_trained"] == 1
    # a time limit stops after epoch 1 of 3: config.yaml says 1 epoch was trained
    monkeypatch.setattr(run_lib, "backend", lambda: "jax")    # no SavedModel: faster
    out = tmp_path / "limited"
    assert _fit(data, out, "--set", "train.epochs=3", "--set", "train.time_limit_s=0.001",
                "--set", "train.neurons_per_step=0") == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["epochs_trained"] == 1


def test_resume_refuses_a_dataset_rebuilt_in_place(trained, tmp_path, capsys):
    run, data = trained
    other = _rebuilt(data, tmp_path / "data")
    r = _copy_run(run, tmp_path / "run", data=other)
    before = _files(r)
    assert fit.main(["--out", str(r), "--resume", "--set", "train.epochs=2"]) == 2
    _one_line(capsys, "manifest.json", "has changed since", "--resume")
    assert _files(r) == before


@pytest.mark.parametrize("command", ["evaluate", "export", "analyze", "insilico"])
def test_commands_refuse_the_runs_own_data_changed(trained, tmp_path, capsys, command):
    from tfsacnn import export
    from tfsacnn.cli import insilico
    from tfsacnn.evaluation import analyze, evaluate

    run, data = trained
    r = _copy_run(run, tmp_path / "run", data=_rebuilt(data, tmp_path / "data"))
    before = _files(r)
    main = {"evaluate": lambda: evaluate.main(["--run", str(r), "--save"]),
            "export": lambda: export.main(["--run", str(r)]),
            "analyze": lambda: analyze.main(["--run", str(r), "--split", "val"]),
            "insilico": lambda: insilico.main(["--run", str(r)])}[command]
    assert main() == 2
    _one_line(capsys, "has changed since", str(r))
    assert _files(r) == before


def test_evaluate_save_on_another_dataset_never_touches_metrics_json(trained, tmp_path, capsys):
    from tfsacnn.evaluation import compare, evaluate

    run, data = trained
    r = _copy_run(run, tmp_path / "run")
    other = _rebuilt(data, tmp_path / "other")
    metrics = (r / "metrics.json").read_bytes()
    assert evaluate.main(["--run", str(r), "--data", str(other), "--split", "val",
                          "--save"]) == 0
    assert (r / "metrics.json").read_bytes() == metrics
    saved = json.loads((r / "metrics_other.json").read_text())
    assert saved["data"]["manifest_sha256"] == _sha(other / "manifest.json")
    assert "val" in saved["splits"]
    # the run still compares as itself; a metrics.json that names other data is refused
    assert len(compare.compare_runs([run, r], split="val")) == 2
    m = json.loads(metrics)
    m["data"]["manifest_sha256"] = saved["data"]["manifest_sha256"]
    (r / "metrics.json").write_text(json.dumps(m))
    capsys.readouterr()
    assert compare.main([str(run), str(r), "--split", "val"]) == 2
    _one_line(capsys, "metrics.json", "scores another dataset")


def test_legacy_run_is_accepted_with_a_note(trained, tmp_path, capsys):
    """A run from before the sha256 was recorded, in a folder that also holds a dataset."""
    from tfsacnn.evaluation import evaluate

    run, data = trained
    (tmp_path / "manifest.json").write_text("{}")
    r = _copy_run(run, tmp_path / "run")
    cfg = yaml.safe_load((r / "config.yaml").read_text())
    cfg["data"].pop("manifest_sha256", None)
    cfg["train"].pop("epochs_trained", None)
    (r / "config.yaml").write_text(yaml.safe_dump(cfg))
    m = json.loads((r / "metrics.json").read_text())
    m["data"].pop("manifest_sha256", None)
    (r / "metrics.json").write_text(json.dumps(m))
    assert evaluate.main(["--run", str(r), "--split", "val"]) == 0
    err = capsys.readouterr().err
    assert "records no manifest sha256" in err and "not checked" in err


def test_stale_saved_model_is_refused_and_export_rewrites_it(trained, tmp_path, capsys):
    from tfsacnn import export
    from tfsacnn.evaluation import evaluate

    run, _ = trained
    stamp = run / "saved_model" / export.STAMP
    assert stamp.read_text().strip() == _sha(run / "model.keras")
    r = _copy_run(run, tmp_path / "run")
    model = export.load_keras(r / "model.keras")
    v = model.trainable_variables[0]
    v.assign(v.numpy() + 0.5)
    export.save_keras(model, r / "model.keras")          # as a resume elsewhere would
    assert evaluate.main(["--run", str(r), "--split", "val"]) == 2
    _one_line(capsys, "saved_model", "stale", "tfsacnn export")
    assert export.main(["--run", str(r), "--quiet"]) == 0
    assert (r / "saved_model" / export.STAMP).read_text().strip() == _sha(r / "model.keras")
    assert evaluate.main(["--run", str(r), "--split", "val", "--quiet"]) == 0


def test_resume_without_tensorflow_export_removes_the_stale_saved_model(
        trained, tmp_path, monkeypatch, capsys):
    """Under JAX (no SavedModel export after training) a resume that replaces model.keras
    removes saved_model/ and says so."""
    from tfsacnn.training import run as run_lib

    run, _ = trained
    r = _copy_run(run, tmp_path / "run")
    keras_sha = _sha(r / "model.keras")
    monkeypatch.setattr(run_lib, "backend", lambda: "jax")
    assert fit.main(["--out", str(r), "--resume", "--set", "train.epochs=2"]) == 0
    assert _sha(r / "model.keras") != keras_sha
    assert not (r / "saved_model").exists()
    assert f"removed {r / 'saved_model'}" in capsys.readouterr().out
    assert yaml.safe_load((r / "config.yaml").read_text())["train"]["epochs_trained"] == 2


# ------------------------------------------------------------------ one lock for every writer
def test_every_writer_is_refused_while_the_run_is_locked(trained, tmp_path, capsys):
    from tfsacnn import export
    from tfsacnn.cli import insilico
    from tfsacnn.evaluation import analyze, evaluate

    run, data = trained
    r = _copy_run(run, tmp_path / "run")
    before = _files(r)
    writers = {"evaluate --save": lambda: evaluate.main(["--run", str(r), "--save"]),
               "export": lambda: export.main(["--run", str(r)]),
               "analyze": lambda: analyze.main(["--run", str(r), "--split", "val"]),
               "insilico": lambda: insilico.main(["--run", str(r)]),
               "fit --resume": lambda: fit.main(["--out", str(r), "--resume"]),
               "fit --overwrite": lambda: fit.main(["--config", str(REPO / "configs/ff_sa_cnn.yaml"),
                                                    "--data", str(data), "--out", str(r), "--overwrite",
                                                    *ONE_EPOCH])}
    with runs.RunLock(r):
        for name, main in writers.items():
            assert main() == 2, name
            _one_line(capsys, f"is being written by process {os.getpid()}")
    assert _files(r) == before
    # read-only commands go on while it is locked
    with runs.RunLock(r):
        assert evaluate.main(["--run", str(r), "--split", "val", "--quiet"]) == 0


def test_a_writer_paused_inside_the_lock_keeps_others_out(trained, tmp_path, monkeypatch,
                                                         capsys):
    """evaluate --save holds the lock between locking and writing; export, tried at that
    moment, is refused and writes nothing; the paused writer then finishes."""
    from tfsacnn import export
    from tfsacnn.evaluation import evaluate

    run, _ = trained
    r = _copy_run(run, tmp_path / "run")
    (r / "metrics.json").unlink()
    sm = _files(r / "saved_model")
    seen = []

    def hook(point, where):
        if point == "locked" and not seen:
            seen.append(export.main(["--run", str(r)]))
            seen.append(capsys.readouterr().err)

    monkeypatch.setattr(runs, "_pause_hook", hook)
    assert evaluate.main(["--run", str(r), "--split", "val", "--save", "--quiet"]) == 0
    assert seen and seen[0] == 2 and "is being written by process" in seen[1]
    assert _files(r / "saved_model") == sm
    assert "val" in json.loads((r / "metrics.json").read_text())["splits"]


def test_a_fit_that_loses_the_race_for_a_new_run_deletes_nothing(trained, tmp_path,
                                                                monkeypatch, capsys):
    """Two fits start a new --out together; the winner locks it and writes between the
    loser's mkdir and the loser's lock. The loser is refused and deletes nothing."""
    _, data = trained
    out = tmp_path / "new"
    held = []

    def winner(point, where):
        if point == "before-lock" and not held:
            held.append(runs.RunLock(where).__enter__())
            (where / "config.yaml").write_text("written: by the winner\n")

    monkeypatch.setattr(runs, "_pause_hook", winner)
    try:
        assert _fit(data, out) == 2
        _one_line(capsys, "is being written by process")
        assert held and (out / "config.yaml").read_text() == "written: by the winner\n"
    finally:
        for lock in held:
            lock.__exit__(None, None, None)


def test_the_lock_is_between_processes(trained, tmp_path, capsys):
    """A second process paused inside the lock (TFSACNN_TEST_PAUSE) keeps this one out."""
    from tfsacnn import export

    run, _ = trained
    r = _copy_run(run, tmp_path / "run")
    gate = tmp_path / "gate"
    gate.mkdir()
    env = dict(os.environ, TFSACNN_TEST_PAUSE=f"locked:{gate}", PYTHONPATH=str(REPO),
               TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-m", "tfsacnn.evaluate", "--run", str(r),
                             "--split", "val", "--save", "--quiet"], env=env, cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3000):
            if (gate / "locked.reached").exists() or proc.poll() is not None:
                break
            import time
            time.sleep(0.05)
        assert (gate / "locked.reached").exists(), proc.stderr.read() if proc.poll() else ""
        assert export.main(["--run", str(r)]) == 2
        _one_line(capsys, f"is being written by process {proc.pid}")
    finally:
        (gate / "locked.go").write_text("")
        assert proc.wait(timeout=300) == 0, proc.stderr.read()


# ------------------------------------------------------------------ no leftovers
def _dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_temporaries_are_removed_by_the_next_writer(trained, tmp_path):
    """A writer killed during export leaves saved_model.tmp-<pid>-*: the next command that
    writes into the run (here evaluate --save) deletes it; a live process's is kept."""
    from tfsacnn.evaluation import evaluate

    run, _ = trained
    r = _copy_run(run, tmp_path / "run")
    dead = _dead_pid()
    stale = [r / f"saved_model.tmp-{dead}-0a1b2c3d", r / f"metrics.json.tmp-{dead}-00ff00ff",
             r / "checkpoints" / f"last.npz.tmp-{dead}-12345678.npz"]
    stale[0].mkdir()
    (stale[0] / "out").mkdir()
    for p in stale[1:]:
        p.write_bytes(b"partial")
    alive = r / "metrics.json.tmp-1-deadbeef"          # pid 1 is alive: not touched
    alive.write_bytes(b"someone's")
    assert evaluate.main(["--run", str(r), "--split", "val", "--save", "--quiet"]) == 0
    assert not any(p.exists() for p in stale)
    assert alive.exists()


def test_synthesize_overwrite_removes_a_killed_writers_temporary(tmp_path):
    from data_prep.synthesize import synthesize

    out = tmp_path / "site"
    stale = tmp_path / f"site.tmp-{_dead_pid()}-abcdef01"
    (stale / "out").mkdir(parents=True)
    (stale / "out" / "manifest.json").write_text("{}")
    synthesize(out, neurons=1, train=20, val=10, test=0, repeats=2, seed=0, progress=False)
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["site"]


def test_errors_on_an_unwritable_target_name_it_not_the_temporary(tmp_path):
    from tfsacnn.files import atomic_dir

    target = tmp_path / "saved_model"

    def write(tmp):
        raise PermissionError(13, "Permission denied", str(tmp))

    with pytest.raises(PermissionError) as e:
        atomic_dir(target, write)
    assert e.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_temporaries_are_named_with_their_pid(tmp_path, monkeypatch):
    from tfsacnn import files

    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", spy)
    files.write_text(tmp_path / "a.json", "{}")
    assert files.TEMP.match(seen[0])["pid"] == str(os.getpid())
    assert np.all([files.TEMP.match(n)["target"] == "a.json" for n in seen])
