"""TensorFlow's start-up noise on stderr, dropped without hiding real errors.

`import tensorflow` and the first device query print absl/oneDNN/CUDA lines straight to
file descriptor 2, before Python logging exists and whatever TF_CPP_MIN_LOG_LEVEL says
(absl writes everything before `absl::InitializeLog()`). `quiet_tensorflow()` runs both
with fd 2 sent to a temporary file, then replays every line that is not one of the known
benign lines below: real errors (and Python warnings) still reach stderr, after the import.
CLIs call it first thing in `main()`; `--verbose` calls it with verbose=True (no filter).
"""
import contextlib
import os
import re
import sys
import tempfile

# A TF C++ log line: severity + MMDD, time, thread id, file:line], message.
_LOG_LINE = re.compile(r"^[IWE]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] (?P<msg>.*)$")
BENIGN_MESSAGES = re.compile("|".join([
    r"oneDNN custom operations are on",
    r"Could not find cuda drivers on your machine",
    r"failed call to cuInit",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"Unable to register (cuDNN|cuFFT|cuBLAS) factory",
    r"computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"successful NUMA node read from SysFS",
    r"Created device /job:localhost/replica:0/task:0/device:GPU",
]))
BENIGN_LINES = re.compile("|".join([
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$",
    r"^Skipping registering GPU devices\.\.\.$",
]))


def is_benign(line):
    """True for one of TensorFlow's known start-up lines (without its newline)."""
    line = line.rstrip("\r\n")
    if BENIGN_LINES.match(line):
        return True
    m = _LOG_LINE.match(line)
    return bool(m and BENIGN_MESSAGES.search(m["msg"]))


@contextlib.contextmanager
def filtered_stderr(keep=lambda line: not is_benign(line)):
    """Send fd 2 to a temporary file inside the block; then replay the lines `keep` accepts."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                tmp.seek(0)
                text = tmp.read().decode("utf-8", errors="replace")
                kept = [ln for ln in text.splitlines(keepends=True) if keep(ln)]
                if kept:
                    sys.stderr.write("".join(kept) + ("" if kept[-1].endswith("\n") else "\n"))
                    sys.stderr.flush()
    finally:
        os.close(saved)


def quiet_tensorflow(verbose=False):
    """Import TensorFlow (and query its devices) with its benign start-up lines dropped.

    verbose=True: no filter, and TF_CPP_MIN_LOG_LEVEL=0, so every line shows. No-op when
    TensorFlow is already imported, under another Keras backend (JAX), or without it.
    """
    if "tensorflow" in sys.modules:
        return
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"   # modules set "2" by default at import
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # after absl starts: errors only
    with filtered_stderr():
        import keras               # imports TensorFlow itself under the TensorFlow backend

        if keras.backend.backend() != "tensorflow":
            # JAX: TensorFlow is not needed; if something imports it later (Keras' saving
            # does, where it is installed), its start-up lines are dropped then
            wrap_import("tensorflow", _filtered)
            return
        try:
            import tensorflow as tf
        except ImportError:
            return
        tf.config.list_physical_devices()   # CUDA's init line comes with the first device query


def _filtered(run, module):
    with filtered_stderr():
        run(module)


class _WrapImport:
    """Meta path finder: the first import of module `name` runs as `wrapper(run, module)`,
    where `run(module)` executes it (the finder removes itself once used)."""

    def __init__(self, name, wrapper):
        self.name, self.wrapper = name, wrapper

    def find_spec(self, fullname, path=None, target=None):
        import importlib.util

        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run, wrapper = spec.loader.exec_module, self.wrapper
        spec.loader.exec_module = lambda module: wrapper(run, module)
        return spec


def wrap_import(name, wrapper):
    """Run the first `import name` as `wrapper(run, module)` (`run(module)` executes the
    module); None if `name` is imported already (nothing to wrap), else the finder."""
    if name in sys.modules:
        return None
    for f in sys.meta_path:
        if isinstance(f, _WrapImport) and f.name == name and f.wrapper is wrapper:
            return f
    finder = _WrapImport(name, wrapper)
    sys.meta_path.insert(0, finder)
    return finder
