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
