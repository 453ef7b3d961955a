"""Reading and writing run artefacts: one-line errors on bad files, atomic writes.

Every temporary is named `<target>.tmp-<pid>-<random>[.ext]` next to its target. One
left by a process that was killed (its pid is no longer alive) is deleted by the next
write to the same target (`remove_stale`), and by any command that locks the run it is in.
"""
import contextlib
import hashlib
import io
import json
import os
import pathlib
import re
import secrets
import shutil

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


YAML_MAX_NODES = 100_000   # a document may expand (aliases included) to this many nodes


def parse_yaml(text, where, error=TfsacnnError):
    """The YAML document `text` (None if empty), read strictly: `error("<where>: <problem>")`
    for a syntax error, a key given twice in one mapping, a recursive alias, or aliases that
    expand to more than `YAML_MAX_NODES` nodes. Only plain YAML types (`yaml.safe_load`'s)."""
    import yaml

    try:
        return yaml.load(text, Loader=_strict_loader())
    except _Refused as e:
        raise error(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise error(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None


def load_yaml(path, error=TfsacnnError):
    """The YAML document in file `path` (None if empty), read by `parse_yaml` after checking
    that it is UTF-8 text. `path`: a path or a package resource (anything with read_bytes)."""
    path = path if hasattr(path, "read_bytes") else pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                    f"save it as UTF-8") from None
    return parse_yaml(text, path, error)


def read_yaml(path, error=TfsacnnError):
    """A YAML mapping from file `path` (`load_yaml`; empty file -> {})."""
    value = load_yaml(path, error)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise error(f"{path}: expected a mapping")
    return value


class _Refused(Exception):
    """A document the strict loader refuses (the message says why)."""


_LOADER = None


def _strict_loader():
    """yaml.SafeLoader that refuses duplicate keys and unbounded alias expansion."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def get_single_node(self):
            node = super().get_single_node()
            if node is not None:
                _expanded_size(node)
            return node

        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:      # an unhashable key: SafeLoader says so below
                    continue
                if first is not key_node:
                    raise _Refused(f"key {key!r} appears twice in one mapping (lines "
                                   f"{first.start_mark.line + 1} and "
                                   f"{key_node.start_mark.line + 1}); keep one")
            return super().construct_mapping(node, deep=deep)

    _LOADER = StrictLoader
    return _LOADER


def _expanded_size(root):
    """Number of nodes of `root` with every alias expanded; _Refused beyond YAML_MAX_NODES
    or for a recursive alias."""
    import yaml

    sizes, open_ = {}, set()

    def size(node):
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_:
            raise _Refused("a recursive alias (a node that contains itself)")
        open_.add(id(node))
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k) + size(v) for k, v in node.value)
        open_.discard(id(node))
        if n > YAML_MAX_NODES:
            raise _Refused(f"aliases expand to more than {YAML_MAX_NODES} YAML nodes; "
                           f"write the values out")
        sizes[id(node)] = n
        return n

    return size(root)


def write_text(path, text, mode="w"):
    """Write `text` to `path` through a temporary file in the same directory and a rename.

    On any failure (disk full, bad encoding, Ctrl-C) the temporary file is removed and
    `path` is untouched. `mode` "wb" writes bytes (`write_bytes`).
    """
    path = pathlib.Path(path)
    with temporary(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
        with os.fdopen(fd, mode) as f:
            f.write(text)
        os.replace(tmp, path)


def write_bytes(path, data):
    """`write_text` for bytes: through a temporary and a rename, nothing half-written."""
    write_text(path, data, mode="wb")


def write_npz(path, arrays):
    """`np.savez(path, **arrays)` ({name: array}) through a temporary and a rename."""
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())


TEMP = re.compile(r"^(?P<target>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}(?:\.[A-Za-z0-9]+)?$")


def temp_path(path, suffix=""):
    """A fresh temporary name next to `path`: `<name>.tmp-<pid>-<8 hex><suffix>`."""
    path = pathlib.Path(path)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


@contextlib.contextmanager
def temporary(path, suffix=""):
    """Yield `temp_path(path, suffix)` after removing `path`'s stale temporaries.

    The temporary (a file or a directory) is deleted if still there at the end, whatever
    happens; an OSError names `path`, not the temporary (e.g. a read-only directory).
    """
    path = pathlib.Path(path)
    remove_stale(path.parent, path.name)
    tmp = temp_path(path, suffix)
    try:
        yield tmp
    except OSError as e:
        if e.filename is not None and tmp.name in str(e.filename):
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise
    finally:
        _remove(tmp)


def _remove(p):
    p = pathlib.Path(p)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def remove_dir(path):
    """Delete directory `path`: renamed to a temporary name first, so `path` is either
    whole or absent (a kill part-way leaves a temporary that `remove_stale` deletes)."""
    path = pathlib.Path(path)
    with temporary(path) as tmp:
        os.replace(path, tmp)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True                   # another user's process, or not a pid: keep
    return True


def remove_stale(directory, target=None):
    """Delete the temporaries in `directory` (of `target` only, if given) whose process
    is gone; returns their names. Temporaries of a live process are left alone."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = TEMP.match(name)
        if m is None or (target is not None and m["target"] != target):
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or pid_alive(pid):
            continue
        _remove(pathlib.Path(directory) / name)
        removed.append(name)
    return removed


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
    with temporary(path) as scratch:
        scratch.mkdir()
        old = None
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


def sha256(path):
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
