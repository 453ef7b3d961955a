"""Cases from the adversarial audit (docs/audit.md): each refused in one line, exit code 2
(130 for Ctrl-C), before any work, with nothing half-written and nothing deleted."""
import pathlib

import numpy as np
import pytest


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


def _tiny_config(tmp_path, **train):
    """A 1-epoch ff_cnn config file; `train` adds keys to its train section."""
    import yaml

    cfg = {"model": {"name": "ff_cnn"}, "train": {"epochs": 1, **train}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _fake_run(root, data_dir):
    """A finished-looking run directory (no model): config.yaml, metrics.json, checkpoints/."""
    import yaml

    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.npz").write_bytes(b"keep")
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"name": "ff_cnn"}, "data": {"dir": str(data_dir)}, "train": {"epochs": 1}}))
    (run / "metrics.json").write_text('{"splits": {}}')
    return run


# ------------------------------------------------------------------ Ctrl-C (A-ctrl-c)
def test_ctrl_c_in_a_command_is_one_line_and_exit_130(capsys):
    from tfsacnn.errors import run_cli

    def interrupted():
        raise KeyboardInterrupt

    try:
        code = run_cli(interrupted, path="RUN")
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped run_cli as a traceback")
    assert code == 130
    err = _lines(capsys.readouterr().err)
    assert err == ["error: interrupted (Ctrl-C)"]


def test_ctrl_c_during_the_first_epoch_leaves_no_new_run(site, tmp_path, monkeypatch, capsys):
    """A new run interrupted before its first checkpoint is removed (nothing to resume)."""
    from tfsacnn.cli import fit
    from tfsacnn.training.trainer import Trainer

    def interrupted(self, *a, **k):
        (self.run_dir / "tensorboard").mkdir(exist_ok=True)    # something half-written
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted)
    out = tmp_path / "run"
    try:
        code = fit.main(["--config", str(_tiny_config(tmp_path)), "--data", str(site),
                         "--out", str(out), "--quiet"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped fit as a traceback")
    assert code == 130
    assert _lines(capsys.readouterr().err) == ["error: interrupted (Ctrl-C)"]
    assert not out.exists()


# ------------------------------------------------------- fit --resume --overwrite (V1)
def test_resume_with_overwrite_is_refused_and_deletes_nothing(site, tmp_path, capsys):
    from tfsacnn.cli import fit
    from tfsacnn.errors import TfsacnnError
    from tfsacnn.runs import check_run_dir

    run = _fake_run(tmp_path, site)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    code = fit.main(["--out", str(run), "--resume", "--overwrite", "--quiet"])
    err = _lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and "--resume and --overwrite" in err[0], err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert (run / "checkpoints" / "last.npz").read_bytes() == b"keep"
    with pytest.raises(TfsacnnError, match="resume and overwrite"):
        check_run_dir(run, resume=True, overwrite=True)        # the library refuses too


# ------------------------------------------------- multiworker without TF_CONFIG (V2)
def test_multiworker_without_tf_config_is_refused(monkeypatch):
    from tfsacnn.errors import ConfigError
    from tfsacnn.training.strategy import make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="multiworker needs TF_CONFIG"):
        make_strategy("multiworker")


# --------------------------------------------------- --neurons named in its error (V5)
def test_bad_neurons_flag_is_named(site, tmp_path, capsys):
    from tfsacnn.cli import fit
    from tfsacnn.errors import ConfigError
    from tfsacnn.evaluation.analyze import select_neurons

    out = tmp_path / "run"
    code = fit.main(["--config", str(_tiny_config(tmp_path)), "--data", str(site),
                     "--out", str(out), "--neurons", "abc", "--quiet"])
    err = _lines(capsys.readouterr().err)
    assert code == 2 and err[0].startswith("error: --neurons abc: "), err
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"^--neurons 7: index 7 out of range"):
        select_neurons("7", [0, 1, 2], 3)                                   # analyze --neurons 7


# ---------------------------------------- `tfsacnn <command> --help` names itself (V7)
@pytest.mark.parametrize("argv, prog", [
    (["fit", "--help"], "tfsacnn fit"),
    (["data", "synthesize", "--help"], "tfsacnn data synthesize"),
    (["bench", "train", "--help"], "tfsacnn bench train"),
])
def test_subcommand_help_shows_the_tfsacnn_command(argv, prog, capsys):
    from tfsacnn.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {prog} ") and "python -m" not in out.split("\n\n")[0]


def test_module_help_keeps_its_python_m_name(capsys):
    from data_prep import synthesize

    with pytest.raises(SystemExit):
        synthesize.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m data_prep.synthesize ")


# ---------------------------------------------------------- negative --seed (V6, I17, J9)
@pytest.mark.parametrize("module, argv", [
    ("tfsacnn.bench", ["data", "--examples", "4", "--neurons", "2"]),
    ("data_prep.build_tfrecords", ["--out", "X", "--images", "i.npy", "--responses", "r.npy"]),
    ("data_prep.synthesize", ["--out", "X", "--neurons", "2", "--train", "4", "--val", "2"]),
])
def test_negative_seed_is_a_usage_error(module, argv, tmp_path, monkeypatch, capsys):
    import importlib

    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(module)
    with pytest.raises(SystemExit) as e:
        mod.main(argv + ["--seed", "-1"])
    assert e.value.code == 2
    assert _lines(capsys.readouterr().err) == ["error: --seed: must be >= 0, got -1"]
    assert list(tmp_path.iterdir()) == []


def test_negative_train_seed_is_refused_by_the_config():
    from tfsacnn import config as config_lib
    from tfsacnn.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train\.seed must be in \[0, 2\*\*32\)"):
        config_lib.load("ff_cnn", ["train.seed=-1"])


# ----------------------------------------------- --out checked before the work (B7, C3, D3)
def _no_work(*a, **k):
    raise AssertionError("the work started before --out was checked")


def test_evaluate_checks_out_before_the_work(tmp_path, monkeypatch, capsys):
    from tfsacnn.evaluation import evaluate

    monkeypatch.setattr(evaluate, "evaluate_run", _no_work)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert evaluate.main(["--run", str(tmp_path), "--out", str(blocker / "e.json")]) == 2
    err = _lines(capsys.readouterr().err)
    assert err == [f"error: --out {blocker / 'e.json'}: cannot be created ({blocker} is a file)"]
    assert evaluate.main(["--run", str(tmp_path), "--out", str(tmp_path), "--save"]) == 2
    assert "is a directory; --out names a file" in capsys.readouterr().err


def test_compare_checks_both_outputs_before_the_work(tmp_path, monkeypatch, capsys):
    from tfsacnn.evaluation import compare

    monkeypatch.setattr(compare, "compare_runs", _no_work)
    (tmp_path / "t.csv").mkdir()                  # the CSV next to the table cannot be written
    assert compare.main([str(tmp_path), "--split", "val", "--out", str(tmp_path / "t.md")]) == 2
    assert "t.csv: is a directory" in capsys.readouterr().err
    assert not (tmp_path / "t.md").exists()


def test_analyze_checks_out_before_the_work(tmp_path, monkeypatch, capsys):
    from tfsacnn.evaluation import analyze

    monkeypatch.setattr(analyze, "analyze", _no_work)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert analyze.main(["--run", str(tmp_path), "--split", "val", "--out", str(blocker)]) == 2
    assert "is a file; --out names a directory" in capsys.readouterr().err
    assert analyze.main(["--run", str(tmp_path), "--split", "val",
                         "--out", str(blocker / "sub")]) == 2
    assert f"({blocker} is a file)" in capsys.readouterr().err


def test_compare_refuses_a_ground_truth_it_would_ignore(tmp_path, capsys):
    from tfsacnn.evaluation import compare

    with pytest.raises(SystemExit) as e:
        compare.main([str(tmp_path), "--ground-truth", str(tmp_path / "gt.npz")])
    assert e.value.code == 2
    assert "--ground-truth: only read with --group-by-surround" in capsys.readouterr().err


# ------------------------------------------------- image size: dataset vs model (N1, N2)
def test_fit_refuses_a_dataset_whose_images_the_model_cannot_take(tmp_path, capsys):
    from data_prep.synthesize import synthesize
    from tfsacnn.cli import fit

    data = tmp_path / "small"
    synthesize(data, neurons=2, train=20, val=10, repeats=2, size=32, seed=0, progress=False)
    out = tmp_path / "run"
    code = fit.main(["--config", str(_tiny_config(tmp_path)), "--data", str(data),
                     "--out", str(out), "--quiet"])
    err = _lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1, err
    assert "images are 32x32 but the model takes 50x50" in err[0]
    assert "model.overrides.image_size: 32" in err[0]
    assert not out.exists()


@pytest.mark.slow
def test_evaluate_refuses_a_dataset_of_another_image_size(site, tmp_path):
    import yaml

    from tfsacnn import models
    from tfsacnn.errors import TfsacnnError
    from tfsacnn.evaluation.evaluate import evaluate_run
    from tfsacnn.export import export_saved_model

    run = tmp_path / "run"
    run.mkdir()
    model = models.build("ff_cnn", n_neurons=3, image_size=32)
    export_saved_model(model, run / "saved_model")
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"dir": str(site)}}))
    with pytest.raises(TfsacnnError, match=r"images are 50x50, but .*saved_model takes 32x32"):
        evaluate_run(run, split="val")


# ----------------------------------------------- an empty --split is not the default (M13)
@pytest.mark.parametrize("module, argv", [
    ("tfsacnn.evaluation.evaluate", ["--run", "R"]),
    ("tfsacnn.evaluation.compare", ["R"]),
    ("tfsacnn.evaluation.analyze", ["--run", "R"]),
])
def test_empty_split_is_a_usage_error(module, argv, capsys):
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main(argv + ["--split", ""])
    assert e.value.code == 2
    assert _lines(capsys.readouterr().err) == [
        "error: --split: expected a split name (train, val, test, ...), got ''"]


def test_empty_neurons_flag_is_shown_quoted():
    from tfsacnn.data import parse_neurons_flag
    from tfsacnn.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^--neurons '': "):
        parse_neurons_flag("", 3)


# ------------------------------------- --overwrite of the run init_from names (P1)
def test_overwrite_of_the_init_from_run_is_refused_and_keeps_it(site, tmp_path, capsys):
    from tfsacnn.cli import fit

    run = _fake_run(tmp_path, site)
    (run / "model.keras").write_bytes(b"the user's model")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    code = fit.main(["--config", str(_tiny_config(tmp_path)), "--data", str(site),
                     "--out", str(run), "--overwrite", "--set", f"train.init_from={run}/",
                     "--quiet"])
    err = _lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and "train.init_from names the run" in err[0], err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert (run / "model.keras").read_bytes() == b"the user's model"


def test_evaluate_of_a_run_without_saved_model_names_the_tfsacnn_command(tmp_path, capsys):
    """A run trained under JAX has no saved_model/: one line naming `tfsacnn export`."""
    from tfsacnn.evaluation import evaluate

    run = _fake_run(tmp_path, tmp_path / "data")
    assert evaluate.main(["--run", str(run)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and f"`tfsacnn export --run {run}`" in err[0], err
