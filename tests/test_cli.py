"""CLI conventions (docs/cli.md): names, help with defaults, --quiet/--verbose, one-line
errors never glued to a progress bar, no TensorFlow start-up noise, atomic writes."""
import argparse
import importlib
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from tfsacnn.errors import OneLineParser, TfsacnnError, run_cli

COMMANDS = {   # command -> module whose main(argv) runs it
    "fit": "tfsacnn.cli.fit", "evaluate": "tfsacnn.evaluation.evaluate",
    "compare": "tfsacnn.evaluation.compare", "analyze": "tfsacnn.evaluation.analyze",
    "export": "tfsacnn.export", "import_torch": "tfsacnn.cli.import_torch",
    "bench": "tfsacnn.bench", "build_tfrecords": "data_prep.build_tfrecords",
    "synthesize": "data_prep.synthesize", "insilico": "tfsacnn.cli.insilico",
}
# Flags of files owned by others, still waiting for the changes sent to their owners
# (docs/cli.md); remove an entry once its command passes.
PENDING = {}
# One spelling per concept: a dest on the left must be spelled as on the right.
CANONICAL = {"batch_size": "--batch-size", "top_k": "--top-k", "set": "--set",
             "quiet": "--quiet", "verbose": "--verbose", "overwrite": "--overwrite"}
OLD_SPELLINGS = {"--batch", "--top", "--override", "--overrides", "--silent", "--debug"}


class _Captured(Exception):
    pass


def _parsers(name, monkeypatch):
    """{label: parser} of a command (bench: one per subcommand), captured from its main()."""
    seen = []

    def capture(self, args=None, namespace=None):
        seen.append(self)
        raise _Captured

    monkeypatch.setattr(OneLineParser, "parse_args", capture)
    with pytest.raises(_Captured):
        importlib.import_module(COMMANDS[name]).main([])
    parser = seen[0]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {name: parser}
    return {f"{name} {k}": p for k, p in subs[0].choices.items()}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_follows_the_conventions(name, monkeypatch):
    for label, parser in _parsers(name, monkeypatch).items():
        if label in PENDING:
            continue
        problems = []
        options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
        for a in options:
            if a.help == argparse.SUPPRESS:          # a hidden deprecated alias
                continue
            flag = max(a.option_strings, key=len)
            if not a.help:
                problems.append(f"{flag}: no help text")
            shown = parser._get_formatter()._expand_help(a) if a.help else ""
            if a.default not in (None, False, [], argparse.SUPPRESS) and not a.required \
                    and "default" not in shown:
                problems.append(f"{flag}: help does not show its default {a.default!r}")
            if set(a.option_strings) & OLD_SPELLINGS:
                problems.append(f"{flag}: old spelling {sorted(set(a.option_strings) & OLD_SPELLINGS)}")
            if a.dest in CANONICAL and CANONICAL[a.dest] not in a.option_strings:
                problems.append(f"{flag}: spell it {CANONICAL[a.dest]}")
        flags = {s for a in options for s in a.option_strings}
        problems += [f"no {f}" for f in ("--quiet", "--verbose") if f not in flags]
        assert not problems, f"{label}: " + "; ".join(problems)


def test_help_shows_defaults_and_hides_deprecated_aliases(capsys):
    from tfsacnn.evaluation import analyze

    with pytest.raises(SystemExit):
        analyze.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--top-k TOP_K images per neuron for the attention pictures (default: 4)" in text
    assert "--top " not in text


def test_help_prints_no_doubled_percent_signs(capsys):
    for name, module in COMMANDS.items():
        with pytest.raises(SystemExit):
            importlib.import_module(module).main(["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "%%" not in text, name
        if name == "compare":
            assert "bootstrap 95% interval" in text


def test_deprecated_alias_still_works(capsys, monkeypatch):
    from tfsacnn.evaluation import analyze

    calls = {}
    monkeypatch.setattr(analyze, "analyze", lambda *a, **k: calls.update(k))
    assert analyze.main(["--run", "nowhere", "--split", "val", "--top", "3", "--quiet"]) == 0
    assert calls["top"] == 3
    assert capsys.readouterr().err == "note: --top is deprecated; use --top-k\n"


# --------------------------------------------------------------------------- errors
def test_error_after_a_progress_bar_starts_its_own_line(capsys):
    from tfsacnn.progress import progress_bar

    def work():
        bar = progress_bar(total=10, desc="reading", disable=False)
        bar.update(3)
        raise TfsacnnError("data/x.npy: truncated")

    assert run_cli(work) == 2
    err = capsys.readouterr().err
    assert err.endswith("\nerror: data/x.npy: truncated\n")
    assert "reading" in err          # the bar was drawn, and its line was ended first


def test_oserror_without_a_file_never_says_none(capsys):
    def fail():
        raise OSError("disk on fire")

    assert run_cli(fail) == 2
    assert capsys.readouterr().err == "error: disk on fire\n"
    assert run_cli(fail, path="run/x") == 2
    assert capsys.readouterr().err == "error: run/x: disk on fire\n"


def test_multi_line_message_is_printed_on_one_line(capsys):
    def fail():
        raise TfsacnnError("a.yaml: bad\n  at line 3\n")

    assert run_cli(fail) == 2
    assert capsys.readouterr().err == "error: a.yaml: bad; at line 3\n"


# --------------------------------------------------------------------------- atomic writes
def test_failed_write_text_leaves_nothing(tmp_path):
    from tfsacnn.files import write_text

    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        write_text(target, "bad \ud800 surrogate")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["metrics.json"]
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError) as e:
        write_text(tmp_path / "d", "x")
    assert e.value.filename == str(tmp_path / "d")          # the real file, not the temporary
    assert sorted(os.listdir(tmp_path)) == ["d", "metrics.json"]
    write_text(target, "new")
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) != "0o600"


def test_failed_atomic_dir_keeps_the_old_one(tmp_path):
    from tfsacnn.files import atomic_dir

    out = tmp_path / "saved_model"
    out.mkdir()
    (out / "old.pb").write_text("old")

    def broken(target):
        target.mkdir()
        (target / "half.pb").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_dir(out, broken)
    assert os.listdir(tmp_path) == ["saved_model"] and os.listdir(out) == ["old.pb"]
    atomic_dir(out, lambda t: (t.mkdir(), (t / "new.pb").write_text("new")))
    assert os.listdir(tmp_path) == ["saved_model"] and os.listdir(out) == ["new.pb"]


# --------------------------------------------------------------------------- TF start-up noise
def test_filtered_stderr_drops_only_known_lines(capfd):
    from tfsacnn.quiet import filtered_stderr, is_benign

    benign = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1795991346.783881    8915 port.cc:153] oneDNN custom operations are on. "
        "You may see slightly different numerical results.",
        "I0000 00:00:1795991346.785955    8915 cudart_stub.cc:31] Could not find cuda drivers "
        "on your machine, GPU will not be used.",
        "E0000 00:00:1795991351.868786    8915 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error",
    ]
    real = ["E0000 00:00:1795991351.868786    8915 op_kernel.cc:1830] OP_REQUIRES failed",
            "Traceback (most recent call last):", "oneDNN custom operations are on"]
    assert all(is_benign(line) for line in benign)
    assert not any(is_benign(line) for line in real)
    with filtered_stderr():
        os.write(2, ("\n".join(benign[:2] + real[:1] + benign[2:] + real[1:]) + "\n").encode())
        print("python warning", file=sys.stderr)
    err = capfd.readouterr().err   # (pytest's capfd catches print() before fd 2)
    assert sorted(err.splitlines()) == sorted(real + ["python warning"])


@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflow_start_up_is_silent_unless_verbose(verbose):
    code = ("import sys\nfrom tfsacnn.quiet import quiet_tensorflow\n"
            f"quiet_tensorflow(verbose={verbose})\n"
            "import tensorflow as tf\nimport keras\nprint(float(tf.constant(1.0) + 1))\n"
            "print('a real problem', file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**env, "PYTHONPATH": str(REPO)}, timeout=300)
    assert r.returncode == 0 and r.stdout == "2.0\n", r.stderr
    if verbose:
        assert r.stderr.endswith("a real problem\n")
    else:
        assert r.stderr == "a real problem\n"


def test_tensorflow_start_up_is_silent_under_jax_too(tmp_path):
    """Under JAX TensorFlow is imported late (Keras' saving imports it where installed);
    its start-up lines are dropped then too, and a real problem still shows."""
    pytest.importorskip("jax")
    code = ("import sys\nfrom tfsacnn.quiet import quiet_tensorflow\nquiet_tensorflow()\n"
            "import keras\nassert keras.backend.backend() == 'jax'\n"
            "assert 'tensorflow' not in sys.modules\n"
            "m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])\n"
            "m.save('m.keras')\nprint('tensorflow' in sys.modules)\n"
            "print('a real problem', file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**env, "PYTHONPATH": str(REPO), "KERAS_BACKEND": "jax"},
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0 and r.stdout == "True\n", r.stderr   # saving imported TF
    assert r.stderr == "a real problem\n"


def test_demo_site_has_a_test_split_to_report_on(tmp_path, monkeypatch):
    """README command 1 selects epochs on val; it must report on a held-out test split."""
    import data_prep.synthesize
    from tfsacnn import config
    from tfsacnn.cli import fit

    calls = []
    monkeypatch.setattr(data_prep.synthesize, "synthesize", lambda out, **kw: calls.append(kw))
    monkeypatch.chdir(tmp_path)
    fit.ensure_demo_data()
    assert calls and calls[0]["test"] >= 100 and calls[0]["val"] >= 100
    cfg = config.load(fit.DEMO_CONFIG)
    assert cfg["eval"]["selection_split"] == "val" and "test" in cfg["eval"]["report_splits"]


NO_TENSORFLOW = r"""
import contextlib, io, json, sys


class NoTensorFlow:                     # a JAX-only machine: `import tensorflow` fails
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r}")


sys.meta_path.insert(0, NoTensorFlow())
from tfsacnn.cli.main import main

out = {}
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        except BaseException as e:
            code, err = "raised", io.StringIO(f"{type(e).__name__}: {e}")
    out[" ".join(argv)] = [code, err.getvalue()]
print(json.dumps(out))
"""


def test_commands_without_tensorflow_work_or_say_what_they_need(tmp_path):
    """On a JAX-only machine each command works, or says in one line that it needs
    TensorFlow and how to install it (no ImportError traceback)."""
    pytest.importorskip("jax")
    from tfsacnn.errors import TENSORFLOW_WHEEL

    run = str(tmp_path / "run")
    need = [["evaluate", "--run", run], ["export", "--run", run],
            ["analyze", "--run", run, "--split", "val"],
            ["import-torch", "--model", "ff_cnn", "--pth", "x.pth", "--out", run],
            ["bench", "data"]]
    works = [["data", "synthesize", "--out", str(tmp_path / "site"), "--neurons", "2",
              "--train", "20", "--val", "10", "--quiet"],
             ["compare", run]]
    r = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, json.dumps(need + works)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(REPO), "KERAS_BACKEND": "jax"})
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert TENSORFLOW_WHEEL in _pyproject_dependencies()
    for argv in need:
        code, err = got[" ".join(argv)]
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
        assert "needs TensorFlow" in err and f"pip install {TENSORFLOW_WHEEL}" in err, err
    code, err = got[" ".join(works[0])]
    assert code == 0 and (tmp_path / "site" / "manifest.json").is_file(), err
    code, err = got[" ".join(works[1])]           # compare: its own one-line error, no TF
    assert code == 2 and "TensorFlow" not in err and len(err.strip().splitlines()) == 1, err


def _pyproject_dependencies():
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def test_importing_the_insilico_package_starts_no_backend():
    """TensorFlow's start-up lines are dropped only if it is imported after quiet_tensorflow:
    the in-silico modules (and `python -m tfsacnn.insilico.compare`) import no backend."""
    code = ("import sys\nimport tfsacnn.insilico, tfsacnn.insilico.compare, tfsacnn.cli.insilico\n"
            "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert r.returncode == 0 and r.stdout == "[]\n", r.stderr
