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
    """Write `text` to `path` through a temporary file in the same directory and a rename.

    On any failure (disk full, bad encoding, Ctrl-C) the temporary file is removed and
    `path` is untouched.
    """
    path = pathlib.Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            pathlib.Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):  # name `path`, not the temporary file that is gone
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def check_writable(path, flag="--out", directory=False):
    """Refuse, before any work, an output `path` that cannot be written: a directory where
    a file goes (or a file where a `directory` goes), or a nearest existing parent that is
    a file or not writable. Creates nothing."""
    path = pathlib.Path(path)
    if path.exists() and path.is_dir() != directory:
        raise TfsacnnError(f"{path}: is a {'directory' if path.is_dir() else 'file'}; {flag} "
                           f"names a {'directory' if directory else 'file'}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise TfsacnnError(f"{flag} {path}: cannot be created ({parent} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TfsacnnError(f"{flag} {path}: cannot be created ({parent} is not writable)")


def atomic_dir(path, write):
    """Run `write(tmp)` for a fresh path `tmp` next to `path`, then rename it to `path`.

    An old `path` is moved aside first and deleted after the rename (restored if the
    rename fails), so `path` is always the old or the complete new one; on any failure
    nothing temporary is left. `write` creates `tmp` (a file or a directory).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
    old = None
    try:
        target = scratch / "out"
        write(target)
        if path.exists() or path.is_symlink():
            old = scratch / "old"
            os.replace(path, old)
        try:
            os.replace(target, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def sha256(path):
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
