"""Reading and writing run artefacts: one-line errors on bad files, atomic writes."""
import hashlib
import json
import os
import pathlib
import shutil
import tempfile

from .errors import TfsacnnError


def read_json(path, error=TfsacnnError):
    """A JSON object from `path`; `error("<path>: <problem>")` if it is unreadable."""
    path = pathlib.Path(path)
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(value, dict):
        raise error(f"{path}: expected a JSON object")
    return value


def read_yaml(path, error=TfsacnnError):
    """A YAML mapping from `path` (`yaml.safe_load`; empty file -> {})."""
    import yaml

    path = pathlib.Path(path)
    try:
        value = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise error(f"{path}: expected a mapping")
    return value


def write_text(path, text):
    """Write `text` to `path` through a temporary file and a rename."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def check_out(path, overwrite, marker, what, error=TfsacnnError):
    """Refuse an output `path` that exists without `overwrite`, or that `overwrite` would
    delete although it is no `what` (a file, or a non-empty directory without `marker`)."""
    path = pathlib.Path(path)
    if not path.exists():
        return
    if not overwrite:
        raise error(f"{path}: already exists (use --overwrite to replace it)")
    if not path.is_dir():
        raise error(f"{path}: is a file, not a {what} directory")
    if any(path.iterdir()) and not (path / marker).exists():
        raise error(f"{path}: not a {what} directory (no {marker}); refusing to delete it")


def atomic_dir(path, write):
    """Run `write(tmp_dir)` then rename tmp_dir to `path` (replacing an old one)."""
    path = pathlib.Path(path)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
    try:
        target = tmp / "out"
        write(target)
        if path.exists():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256(path):
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
