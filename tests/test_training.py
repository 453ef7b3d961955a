"""Trainer and fit CLI on a tiny synthetic site: outputs, TensorBoard tags, determinism,
resume after SIGKILL, NaN handling, SavedModel in a fresh process, config errors."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tfsacnn import training
from tfsacnn.cli import fit

pytestmark = pytest.mark.slow

TINY = ["--set", "train.epochs=2", "--set", "eval.tuning_curve_neurons=2",
        "--set", "model.overrides={channels: 6}"]


def _fit(site, out, *extra, config="configs/ff_sa_cnn.yaml"):
    from tests.conftest import REPO

    return fit.main(["--config", str(REPO / config), "--data", str(site), "--out", str(out),
                     *TINY, *extra])


@pytest.fixture(scope="session")
def tiny_run(site, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ff_sa_cnn"
    assert _fit(site, out) == 0
    return out


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def test_run_directory_contents(tiny_run):
    for name in ("config.yaml", "metrics.json", "metrics.csv", "model.keras",
                 "saved_model/saved_model.pb", "tensorboard"):
        assert (tiny_run / name).exists(), name
    m = _metrics(tiny_run)
    assert m["neurons"] == [0, 1, 2] and m["selection_split"] == "val"
    assert set(m["splits"]) == {"val", "test"}  # selection on val, report on both
    for split in ("val", "test"):
        pn = m["splits"][split]["per_neuron"]
        assert len(pn["corr"]) == 3 and len(pn["pt_j"]) == 3 and len(pn["fev"]) == 3
        assert np.isclose(m["splits"][split]["mean"]["corr"],
                          np.mean([c for c in pn["corr"] if c is not None]))
    assert all(1 <= e <= 2 for e in m["best_epoch"])
    csv = (tiny_run / "metrics.csv").read_text().splitlines()
    assert csv[0] == "split,neuron,neuron_id,corr,pt_j,pt_s,top_overlap,peak_height,best_epoch"
    for split in ("val", "test"):
        pn, mean = m["splits"][split]["per_neuron"], m["splits"][split]["mean"]
        assert all(0 <= v <= 1 for v in pn["top_overlap"]) and len(pn["peak_height"]) == 3
        assert np.isclose(mean["top_overlap"], np.mean(pn["top_overlap"]))
    assert len(csv) == 1 + 2 * 4


def test_tensorboard_has_every_tag(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tfsacnn.training.callbacks import TAGS

    ea = EventAccumulator(str(tiny_run / "tensorboard"), size_guidance={"tensors": 0})
    ea.Reload()
    tags = set(ea.Tags()["tensors"]) | set(ea.Tags()["images"]) | set(ea.Tags()["histograms"])
    assert {"val/pt_j", "val/pt_s", "val/top_overlap", "val/peak_height"} <= set(TAGS)
    for tag in TAGS:
        assert tag in tags, (tag, tags)
    assert [e.step for e in ea.Tensors("val/corr")] == [1, 2]
    assert any("hparams" in t for t in ea.Tags()["tensors"]) or \
        "_hparams_/session_start_info" in ea.Tags()["tensors"]


def test_best_epoch_selection_keeps_per_neuron_best(tiny_run):
    """The reported val CORR of each neuron is its best over the epochs."""
    m = _metrics(tiny_run)
    ckpt = np.load(tiny_run / "checkpoints" / "last.npz")
    np.testing.assert_array_equal(ckpt["best_epoch"], m["best_epoch"])
    np.testing.assert_allclose(ckpt["best_score"], m["splits"]["val"]["per_neuron"]["corr"],
                               atol=1e-6)


def test_same_seed_same_metrics(site, tiny_run, tmp_path):
    assert _fit(site, tmp_path / "again") == 0
    assert _metrics(tmp_path / "again")["splits"] == _metrics(tiny_run)["splits"]


def test_savedmodel_in_fresh_process_without_tfsacnn(tiny_run, site, tmp_path):
    import keras

    import tfsacnn.nn.layers  # noqa: F401  (registers the layers for model.keras)
    from tfsacnn import data

    x, _ = data.load_numpy(site, "val")
    model = keras.saving.load_model(tiny_run / "model.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0))
    code = f"""
import sys, numpy as np, tensorflow as tf
m = tf.saved_model.load(r"{tiny_run / 'saved_model'}")
x = np.load(r"{tmp_path / 'x.npy'}")
y = m.serve(tf.constant(x)).numpy()
np.testing.assert_allclose(y, np.load(r"{tmp_path / 'y.npy'}"), atol=1e-5)
a = m.attention(tf.constant(x[:2])).numpy()
assert a.shape == (2, 3, 1, 81, 81), a.shape
assert "tfsacnn" not in sys.modules
print("OK")
"""
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def test_evaluate_recomputes_metrics_from_savedmodel(tiny_run, capsys):
    from tfsacnn.evaluation import evaluate

    for split in ("val", "test"):
        entry, _ = evaluate.evaluate_run(tiny_run, split=split)
        ref = _metrics(tiny_run)["splits"][split]
        np.testing.assert_allclose(
            [entry["mean"][k] for k in ("corr", "pt_j", "pt_s")],
            [ref["mean"][k] for k in ("corr", "pt_j", "pt_s")], atol=1e-5)
    assert evaluate.main(["--run", str(tiny_run), "--split", "test"]) == 0
    assert "corr" in capsys.readouterr().out


def test_fit_refuses_top_k_larger_than_a_split(site, tmp_path, capsys):
    out = tmp_path / "run"
    assert _fit(site, out, "--set", "eval.top_k=150") == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {site}: the val split has 100 images, fewer than eval.top_k=150 "
                   "(PT needs top_k images)")
    assert not (out / "metrics.json").exists() and not (out / "checkpoints").exists()


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_fit_never_writes_into_or_deletes_what_is_not_a_run(site, tmp_path, capsys):
    before = sorted(p.name for p in site.iterdir())
    for extra in ([], ["--overwrite"]):          # --out mixed up with --data
        assert _fit(site, site, *extra) == 2
        assert "is a dataset (manifest.json), not a run directory" in _one_line_error(capsys)
        assert sorted(p.name for p in site.iterdir()) == before
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "lab_notes.txt").write_text("keep me")
    assert _fit(site, notes, "--overwrite") == 2
    assert "not empty and not a run directory" in _one_line_error(capsys)
    assert (notes / "lab_notes.txt").read_text() == "keep me"
    (tmp_path / "a_file").write_text("x")
    assert _fit(site, tmp_path / "a_file") == 2
    assert "a_file: is a file, not a run directory" in _one_line_error(capsys)
    # a bad setting found by the trainer leaves no run directory behind
    assert _fit(site, tmp_path / "bad", "--neurons", "7") == 2
    _one_line_error(capsys)
    assert not (tmp_path / "bad").exists()


def test_resume_refuses_other_settings_and_a_corrupt_checkpoint(tiny_run, site, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "metrics.json").unlink()                              # unfinished
    args = ["--out", str(run), "--resume"]
    assert fit.main([*args, "--set", "train.batch_size=10"]) == 2
    err = _one_line_error(capsys)
    assert "--resume cannot change train.batch_size to 10 (the run has 50)" in err
    other = tmp_path / "other"
    shutil.copytree(site, other)
    assert fit.main([*args, "--data", str(other)]) == 2
    assert f"data.dir to '{other}'" in _one_line_error(capsys)
    ckpt = run / "checkpoints" / "last.npz"
    ckpt.write_bytes(ckpt.read_bytes()[:100])                    # truncated
    assert fit.main(args) == 2
    assert _one_line_error(capsys) == (
        f"error: {ckpt}: corrupt checkpoint (File is not a zip file); use --overwrite to "
        f"start again")


def test_evaluate_bad_input_is_one_line(tiny_run, site, tmp_path, capsys):
    import shutil

    from tfsacnn.evaluation import evaluate

    def error(*argv):
        assert evaluate.main(list(argv)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
        return err

    # PT on fewer images than top_k is refused, not computed on a smaller top_k
    assert "the test split has 100 images, fewer than top_k=101" in error(
        "--run", str(tiny_run), "--split", "test", "--top-k", "101")
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "metrics.json").unlink()
    (run / "config.yaml").write_text("model: [unclosed\n")
    assert error("--run", str(run)).startswith(f"error: {run / 'config.yaml'}: not valid YAML")
    (run / "config.yaml").write_text("model: {}\n")
    (run / "metrics.json").write_text('{"neurons": [0, 1')
    assert error("--run", str(run), "--data", str(site)).startswith(
        f"error: {run / 'metrics.json'}: not valid JSON")
    assert error("--run", str(tmp_path / "nowhere")).endswith("nowhere: no such run directory")
    # --out: a directory is refused with nothing left behind; a new parent is created
    assert error("--run", str(tiny_run), "--out", str(tmp_path)).endswith(
        ": is a directory; --out names a file")
    assert not (tmp_path.parent / (tmp_path.name + ".tmp")).exists()
    assert evaluate.main(["--run", str(tiny_run), "--out", str(tmp_path / "new" / "e.json")]) == 0
    assert json.loads((tmp_path / "new" / "e.json").read_text())["n_images"] == 100
    # NaN weights (e.g. an imported checkpoint) predict NaN: refused, not scored as CORR NaN
    import keras

    from tfsacnn.export import export_saved_model

    model = keras.saving.load_model(tiny_run / "model.keras", compile=False)
    kernel = model.get_layer("readout").weights[0]
    kernel.assign(np.full(kernel.shape, np.nan, kernel.dtype))
    shutil.rmtree(run / "saved_model")
    export_saved_model(model, run / "saved_model")
    (run / "metrics.json").unlink()
    assert "predicts NaN or inf for 3 neuron(s) on the val split" in error(
        "--run", str(run), "--data", str(site), "--split", "val")
    with pytest.raises(SystemExit) as exit_:             # a usage error: one line too
        evaluate.main(["--run", str(run), "--top-k", "0"])
    assert exit_.value.code == 2 and _one_line_error(capsys) == "error: --top-k: must be >= 1, got 0"


def test_resume_after_sigkill_matches_uninterrupted_run(site, tmp_path):
    from tests.conftest import REPO

    args = ["--set", "train.epochs=3"]
    assert _fit(site, tmp_path / "full", *args) == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "tfsacnn.fit", "--config", str(REPO / "configs/ff_sa_cnn.yaml"),
           "--data", str(site), "--out", str(out), *TINY, *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = out / "checkpoints" / "last.npz"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), proc.stderr.read().decode()[-2000:] if proc.poll() else "timeout"
    time.sleep(0.3)  # into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()
    with np.load(ckpt) as z:
        done, before = int(z["epoch"]), json.loads(bytes(z["history"]).decode())
    assert done < 3 and len(before) == done
    assert fit.main(["--out", str(out), "--resume"]) == 0
    assert _metrics(out)["splits"] == _metrics(tmp_path / "full")["splits"]
    after = json.loads(bytes(np.load(ckpt)["history"]).decode())
    assert after[:done] == before and len(after) == 3     # continued, not retrained


def test_nan_loss_stops_and_keeps_last_good_checkpoint(site, tmp_path, monkeypatch, capsys):
    from tfsacnn.training import steps

    make = steps.make_step
    calls = {"n": 0}

    def poisoned(*args):
        step = make(*args)
        call = step.__call__

        class Poisoned(type(step)):
            def __call__(self, batch):
                calls["n"] += 1
                loss = call(batch)
                return loss * np.nan if calls["n"] > 5 else loss  # 4 steps per epoch
        step.__class__ = Poisoned
        return step

    monkeypatch.setattr(steps, "make_step", poisoned)
    monkeypatch.setattr("tfsacnn.training.trainer.make_step", poisoned)
    assert _fit(site, tmp_path / "nan") == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "loss is nan at epoch 2" in errors[0], errors
    assert int(np.load(tmp_path / "nan" / "checkpoints" / "last.npz")["epoch"]) == 1
    assert not (tmp_path / "nan" / "metrics.json").exists()


@pytest.mark.parametrize("extra, message", [
    (["--set", "train.epoch=3"], "unknown key 'train.epoch'"),
    (["--set", "train.epochs=three"], "train.epochs must be int"),
    (["--set", "model.overrides={chanels: 3}"], "unknown model option"),
    (["--set", "train.init_from=/nonexistent"], "model.keras not found"),
])
def test_bad_config_is_refused_before_work(site, tmp_path, capsys, extra, message):
    assert _fit(site, tmp_path / "bad", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_missing_data_and_existing_run_refused(site, tiny_run, tmp_path, capsys):
    assert fit.main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'nope'}: not a dataset (no manifest.json); --data names a "
        f"directory written by `tfsacnn data build` or `data synthesize`")
    assert _fit(site, tiny_run) == 2
    assert "already there" in capsys.readouterr().err


def test_neuron_chunks_match_one_pass(site, tmp_path):
    """neurons_per_step trains chunks of neurons one after another; with dropout off (its
    masks depend on how many channels are drawn at once) each neuron ends as in one pass."""
    args = ["--set", "model.overrides={channels: 6, dropout: 0.0}"]
    assert _fit(site, tmp_path / "one", *args) == 0
    assert _fit(site, tmp_path / "chunks", *args, "--set", "train.neurons_per_step=2") == 0
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "chunks")
    assert a["best_epoch"] == b["best_epoch"]
    for split in ("val", "test"):
        pa, pb = a["splits"][split]["per_neuron"], b["splits"][split]["per_neuron"]
        np.testing.assert_allclose(pa["corr"], pb["corr"], atol=1e-3)
        np.testing.assert_allclose(pa["pt_j"], pb["pt_j"], atol=0.1 + 1e-9)
    assert (tmp_path / "chunks" / "checkpoints" / "chunk00002.npz").exists()


def test_evaluate_save_makes_a_run_comparable(tiny_run, tmp_path):
    import shutil

    from tfsacnn.evaluation import compare, evaluate

    run = tmp_path / "imported"
    shutil.copytree(tiny_run, run)
    (run / "metrics.json").unlink()
    assert evaluate.main(["--run", str(run), "--split", "test", "--save"]) == 0
    table = compare.compare_runs([tiny_run, run], split="test")
    assert len(table) == 2
    np.testing.assert_allclose(table["corr"].iloc[0], table["corr"].iloc[1], atol=1e-5)
    # the same parameter count as fit wrote: the shared core spread over 3 neurons + readout
    import keras

    from tfsacnn import models

    n_params = models.count_trainable(keras.saving.load_model(run / "model.keras"))
    assert table["params_per_neuron"].tolist() == [round(n_params / 3)] * 2


def test_demo_refuses_bad_key_before_synthesising(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert fit.main(["--set", "train.epohcs=3"]) == 2
    assert "unknown key 'train.epohcs'" in capsys.readouterr().err
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_optimizer_is_the_papers_adam(site, tmp_path, optimizer):
    """Adam's epsilon is PyTorch's 1e-8 (the paper's code), not Keras' 1e-7."""
    from tfsacnn import config

    cfg = config.load(sets=[f"data.dir={site}", f"train.optimizer={optimizer}",
                            "train.weight_decay=0.01", "train.learning_rate=0.002"])
    opt = training.Trainer(cfg, tmp_path / "run").make_optimizer()
    assert type(opt).__name__ == {"adam": "Adam", "adamw": "AdamW"}[optimizer]
    assert opt.epsilon == 1e-8 and float(opt.learning_rate) == pytest.approx(0.002)
    if optimizer == "adamw":
        assert opt.weight_decay == 0.01


def test_checkpoint_keys_are_names_and_a_mismatch_is_refused(tiny_run, tmp_path, capsys):
    """Checkpoints store variables by name; resume refuses one whose names differ."""
    import shutil

    ckpt = np.load(tiny_run / "checkpoints" / "last.npz")
    assert "model/alpha_cpb1_conv/kernel" in ckpt.files
    assert "model/alpha_cpb1_dropout/seed_generator_state" in ckpt.files
    assert "best/readout/kernel" in ckpt.files
    assert any(k.startswith("optimizer/") and k.endswith("_momentum") for k in ckpt.files)
    assert not any(k.startswith(("model_", "opt_")) for k in ckpt.files)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "metrics.json").unlink()                               # unfinished
    path = run / "checkpoints" / "last.npz"
    arrays = {k: ckpt[k] for k in ckpt.files}
    arrays["model/beta_cpb9_conv/kernel"] = arrays.pop("model/beta_cpb2_conv/kernel")
    np.savez(path, **arrays)
    assert fit.main(["--out", str(run), "--resume", "--set", "train.epochs=3"]) == 2
    err = _one_line_error(capsys)
    assert err == (f"error: {path}: the checkpoint's model variables do not match this model "
                   f"(missing beta_cpb2_conv/kernel; unknown beta_cpb9_conv/kernel); use "
                   f"--overwrite to start again")
    arrays["model/beta_cpb2_conv/kernel"] = arrays.pop("model/beta_cpb9_conv/kernel")[..., :1]
    np.savez(path, **arrays)
    assert fit.main(["--out", str(run), "--resume", "--set", "train.epochs=3"]) == 2
    assert "model/beta_cpb2_conv/kernel has shape" in _one_line_error(capsys)


def test_second_writer_is_refused_and_a_killed_writer_does_not_block_resume(site, tmp_path):
    """One writer per run: a second fit on the same --out (even --overwrite) is refused
    while the first runs; after the first is killed, --resume continues the run."""
    from tests.conftest import REPO

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tfsacnn.fit", "--config", str(REPO / "configs/ff_sa_cnn.yaml"),
           "--data", str(site), "--out", str(out), *TINY, "--set", "train.epochs=50"]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoints").exists() and time.time() < deadline \
                and first.poll() is None:
            time.sleep(0.2)
        assert (out / "checkpoints").exists(), first.stderr.read().decode()[-2000:]
        second = subprocess.run([*cmd, "--overwrite"], cwd=REPO, capture_output=True, text=True)
        assert second.returncode == 2
        err = [ln for ln in second.stderr.splitlines() if ln.startswith("error:")]
        assert err == [f"error: {out}: is being written by process {first.pid}; wait for it, "
                       f"or use another --out"], second.stderr[-2000:]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert fit.main(["--out", str(out), "--resume", "--set", "train.epochs=2"]) == 0
    assert (out / "metrics.json").exists()


def test_time_limit_stops_at_an_epoch_boundary_and_resume_goes_on(site, tmp_path):
    """train.time_limit_s ends a run at the last epoch that fits, finished and honest
    about it; --resume with a larger limit trains the remaining epochs."""
    out = tmp_path / "run"
    assert _fit(site, out, "--set", "train.epochs=3", "--set", "train.time_limit_s=0.001",
                "--set", "train.neurons_per_step=0") == 0
    m = _metrics(out)
    assert m["stopped_early"] == "train.time_limit_s=0.001: stopped after epoch 1 of 3"
    assert m["best_epoch"] == [1, 1, 1]
    assert fit.main(["--out", str(out), "--resume", "--set", "train.time_limit_s=1000"]) == 0
    m = _metrics(out)
    assert "stopped_early" not in m and max(m["best_epoch"]) <= 3
    ckpt = np.load(out / "checkpoints" / "last.npz")
    assert int(ckpt["epoch"]) == 3


def test_shared_core_with_attention_trains_checkpoints_and_transfers(site, tmp_path):
    """The shared core's MultiHeadAttention has four kernels: every variable keeps its own
    name in the checkpoint, and init_from copies all of them."""
    import keras

    from tfsacnn import models
    from tfsacnn.training import init_from_run

    out = tmp_path / "shared"
    assert _fit(site, out, "--set", "model.core=shared", "--set", "train.epochs=1") == 0
    keys = np.load(out / "checkpoints" / "last.npz").files
    for part in ("query", "key", "value", "attention_output"):
        assert f"model/self_attention/attention/{part}/kernel" in keys, sorted(keys)[:20]
    src = keras.saving.load_model(out / "model.keras", compile=False)
    fresh = models.build("ff_sa_cnn", n_neurons=3, core="shared", channels=6, seed=123)
    init_from_run(fresh, out)
    for a, b in zip(src.get_layer("self_attention").weights,
                    fresh.get_layer("self_attention").weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_resume_without_a_run_refuses_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert fit.main(["--resume", "--out", str(tmp_path / "nothing")]) == 2
    assert "nothing to resume" in _one_line_error(capsys)
    assert not (tmp_path / "data").exists() and not (tmp_path / "nothing").exists()
