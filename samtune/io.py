"""Small file helpers shared by every writer.

Three promises, kept here so that every writer keeps them:

* nothing half-written is ever left where a reader would take it for complete (outputs are
  assembled beside their destination and renamed into place);
* files get the permissions any other program would give them (``0666`` / ``0777`` less the
  umask), not ``mkstemp``'s private ``0600``;
* ``overwrite`` never removes anything samtune did not write: a folder samtune writes carries a
  manifest (:data:`MANIFEST`) of its entries, and only a folder whose entries are all listed
  there may be replaced. The current folder, its parents and the caller's protected paths
  (the source being exported, say) are never replaced.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import ConfigError, InputError, MissingFileError, RunError

MANIFEST = ".samtune-manifest.json"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _not_writable(path: Path, exc: OSError) -> InputError:
    reason = exc.strerror or str(exc)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir() and parent != path:
            reason = f"{str(parent)!r} is a file, not a folder"
            break
    return InputError(f"cannot write {str(path)!r}: {reason}")


def _make_parent(path: Path) -> list[Path]:
    """Create ``path``'s missing parent folders; returns them, outermost first."""
    created = [p for p in reversed(path.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        raise _not_writable(path, exc) from None
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this write created, innermost first, if nothing else went in."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    Raises:
        InputError: ``path`` is a folder, or its folder cannot be written (read-only, a file).
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {str(path)!r}: it is a folder; give a file name")
    created = _make_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _remove_empty(created)
        raise _not_writable(path, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
        created = []
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
        _remove_empty(created)


def written_by_samtune(folder: str | Path) -> tuple[bool, list[str]]:
    """Whether ``folder`` was written by samtune, and the entries in it that samtune did not write.

    A folder counts as samtune's when it holds a valid :data:`MANIFEST` and every entry in it
    is listed there.
    """
    folder = Path(folder)
    entries = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    try:
        listed = set(json.loads((folder / MANIFEST).read_text())["entries"])
    except (OSError, ValueError, KeyError, TypeError):
        return False, entries
    foreign = [name for name in entries if name not in listed]
    return not foreign, foreign


def check_replaceable(
    path: Path,
    protect: Iterable[str | Path] = (),
    *,
    context: str = "",
    advice: str = "--overwrite only replaces folders samtune wrote. Choose another folder or "
    "empty it yourself",
) -> None:
    """Refuse to replace ``path`` unless samtune wrote it and nothing precious is inside it.

    An empty folder may be replaced. ``context`` (e.g. "the results for x.png") follows the
    path in messages; ``advice`` ends the message about entries samtune did not write.

    Raises:
        InputError: ``path`` is the current folder or one of its parents, holds (or is) one of
            ``protect``, or holds entries samtune did not write (they are named).
    """
    where = f"{str(path)!r}" + (f" ({context})" if context else "")
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise InputError(
            f"refusing to replace {where}: it is the current folder or one of its parents; "
            "choose a new folder for the output"
        )
    for item in protect:
        item = Path(item).resolve()
        if item == resolved or resolved in item.parents:
            raise InputError(
                f"refusing to replace {where}: it holds {str(item)!r}, the input of this "
                "command; choose another output folder"
            )
    if not any(path.iterdir()):
        return
    ours, foreign = written_by_samtune(path)
    if not ours:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise InputError(
            f"refusing to replace {where}: samtune did not write "
            + (f"{shown} there" if foreign else "that folder (it has no samtune manifest)")
            + f"; {advice}"
        )


@contextlib.contextmanager
def atomic_dir(
    path: str | Path, *, overwrite: bool = False, protect: Iterable[str | Path] = ()
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it to ``path`` only on success.

    The finished folder carries a :data:`MANIFEST` of what was written, so that a later
    ``overwrite`` can tell samtune's folders from the user's.

    Args:
        path: the folder to create. An empty existing folder is reused; a non-empty one is
            replaced only with ``overwrite`` and only if samtune wrote it
            (:func:`check_replaceable`).
        overwrite: allow replacing a folder samtune wrote.
        protect: paths that must survive (the command's inputs): a folder holding one of them
            is never replaced.

    Raises:
        InputError: ``path`` is a file, cannot be written, or must not be replaced.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"cannot write folder {str(path)!r}: a file of that name exists")
    replace = path.exists() and any(path.iterdir())
    if replace:
        if not overwrite:
            raise InputError(
                f"{str(path)!r} exists and is not empty; choose another folder, or pass "
                "--overwrite (overwrite=True) to replace an earlier samtune output"
            )
        check_replaceable(path, protect)
    elif path.exists():
        check_replaceable(path)  # an empty folder, but never the current one
    created = _make_parent(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        _remove_empty(created)
        raise _not_writable(path, exc) from None
    try:
        yield tmp
        entries = sorted(p.name for p in tmp.iterdir() if p.name != MANIFEST)
        (tmp / MANIFEST).write_text(
            json.dumps({"written_by": "samtune", "entries": entries}, indent=1) + "\n"
        )
        mode = _umask()
        os.chmod(tmp, 0o777 & ~mode)
        for sub in tmp.rglob("*"):
            if not sub.is_symlink():
                os.chmod(sub, (0o777 if sub.is_dir() else 0o666) & ~mode)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)  # an empty folder, or one check_replaceable cleared
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        created = []
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)


# ---------------------------------------------------------------------------- reading
#
# Every JSON and YAML file samtune reads goes through the readers below, so that one set of
# limits holds everywhere (docs/security.md, "Limits on what samtune reads"): a crafted file
# is refused with one line naming the file and the limit, never read forever, never expanded
# until memory runs out, never parsed until Python's recursion limit breaks.

SMALL_FILE_LIMIT = 16 * 2**20
"""Bytes samtune reads from a config, metrics, sidecar or prompts file (16 MiB)."""
DATA_FILE_LIMIT = 4 * 2**30
"""Bytes samtune reads from a dataset's annotation file (4 GiB; COCO's largest are ~0.5 GB)."""
MAX_DEPTH = 100
"""How deep JSON arrays/objects and YAML collections may nest."""
MAX_YAML_NODES = 100_000
"""How many values a YAML document may hold once its aliases (``*name``) are expanded."""


def _size(n: int) -> str:
    return f"{n // 2**30} GiB" if n >= 2**30 else f"{n // 2**20} MiB"


def read_text(
    path: str | Path,
    *,
    what: str = "file",
    limit: int = SMALL_FILE_LIMIT,
    error: type[Exception] = InputError,
) -> str:
    """The UTF-8 text of ``path`` (a byte-order mark is dropped), read only if it is safe to.

    Refused, with ``error`` naming ``what`` and the file: a path that is not a regular file (a
    device such as ``/dev/zero``, a FIFO, a socket; the null device reads as empty), a file of
    more than ``limit`` bytes (at most ``limit + 1`` are read), text that is not UTF-8.

    Raises:
        MissingFileError: ``path`` does not exist.
    """
    path = Path(path)
    where = f"{what} {str(path)!r}"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise MissingFileError(f"{where} does not exist") from None
    except OSError as exc:
        raise error(f"cannot read {where}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{where} is a folder; give a file")
    if not stat.S_ISREG(info.st_mode):
        if os.path.exists(os.devnull) and os.path.samefile(path, os.devnull):
            return ""
        raise error(f"{where} is not a regular file (a device, FIFO or socket); give a file")
    if info.st_size > limit:
        raise error(f"{where} is {info.st_size} bytes, more than the {_size(limit)} samtune reads")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {where}: {exc.strerror or exc}") from None
    if len(data) > limit:  # it grew while we looked
        raise error(f"{where} is more than the {_size(limit)} samtune reads")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{where} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None


_JSON_KEEP = b'[]{}"'
_JSON_DROP = bytes(i for i in range(256) if i not in _JSON_KEEP)
_JSON_ESCAPE = re.compile(rb"\\.", re.S)
_JSON_CHUNK = 2**24  # bytes of brackets and quotes scanned at a time


def json_depth(text: str) -> int:
    """How deep the arrays and objects of JSON ``text`` nest (brackets inside strings skipped).

    Linear time at C speed, so that a dataset's large annotation file costs a fraction of its
    parse: escapes are cut out, then everything but brackets and quotes, then the running depth
    outside strings is a cumulative sum, in chunks of bounded memory.
    """
    import numpy as np

    data = text.encode("utf-8", "surrogatepass")
    if b"\\" in data:
        data = _JSON_ESCAPE.sub(b"", data)
    data = data.translate(None, _JSON_DROP)
    deepest = level = quotes = 0
    chunk = _JSON_CHUNK
    for start in range(0, len(data), chunk):
        codes = np.frombuffer(
            data, dtype=np.uint8, count=min(chunk, len(data) - start), offset=start
        )
        inside = (np.cumsum(codes == ord('"'), dtype=np.int64) + quotes) % 2 == 1
        steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
        steps[inside | (codes == ord('"'))] = 0
        running = np.cumsum(steps, dtype=np.int64) + level
        deepest = max(deepest, int(running.max(initial=level)))
        level = int(running[-1])
        quotes = (quotes + int(np.count_nonzero(codes == ord('"')))) % 2
    return deepest


def parse_json(
    text: str, where: str, error: type[Exception] = InputError, *, advice: str = ""
) -> object:
    """JSON ``text`` (from ``where``, named in messages), no deeper than :data:`MAX_DEPTH`;
    ``advice`` ends the message about text that is not JSON."""
    brackets = text.count("[") + text.count("{")
    if brackets > MAX_DEPTH and json_depth(text) > MAX_DEPTH:
        raise error(f"{where} nests arrays/objects deeper than {MAX_DEPTH} levels, the limit")
    try:
        return json.loads(text)
    except RecursionError:
        raise error(
            f"{where} nests arrays/objects deeper than {MAX_DEPTH} levels, the limit"
        ) from None
    except ValueError as exc:
        raise error(f"{where} is not valid JSON ({exc}){advice}") from None


def read_json(
    path: str | Path,
    *,
    what: str = "JSON file",
    limit: int = SMALL_FILE_LIMIT,
    error: type[Exception] = InputError,
) -> object:
    """The JSON value in ``path``, within :func:`read_text`'s and :func:`parse_json`'s limits."""
    text = read_text(path, what=what, limit=limit, error=error)
    return parse_json(text, f"{what} {str(path)!r}", error)


def read_json_object(
    path: str | Path,
    error: type[Exception] = InputError,
    *,
    what: str = "JSON file",
    limit: int = SMALL_FILE_LIMIT,
) -> dict:
    """A JSON file that must hold an object; ``error`` (naming the file) otherwise."""
    data = read_json(path, what=what, limit=limit, error=error)
    if not isinstance(data, dict):
        raise error(f"{str(path)!r} must hold a JSON object; found {type(data).__name__}")
    return data


def dump_json(data: object, **options: object) -> str:
    """``data`` as JSON text: the one JSON writer, so a file samtune writes is always JSON.

    ``NaN`` and infinities are not JSON (other readers refuse them), so they are never
    written: :class:`~samtune.errors.RunError` names where the value sits (``metrics.miou``).
    """
    try:
        return json.dumps(data, allow_nan=False, **options)  # type: ignore[arg-type]
    except ValueError:
        where = _non_finite(data, "") or "a value"
        raise RunError(
            f"the run produced a non-finite number (NaN or infinity) at {where}; it cannot be "
            "written as JSON. The run failed: lower the learning rate or check the data"
        ) from None


def _non_finite(data: object, where: str) -> str | None:
    """The dotted path of the first NaN or infinity in ``data``, or None."""
    stack = [(data, where)]
    while stack:
        value, at = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return at or "the top level"
        if isinstance(value, dict):
            stack.extend((v, f"{at}.{k}" if at else str(k)) for k, v in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(value))
    return None


def _yaml_error(path: Path, exc: Exception) -> str:
    """A YAML parser error as one line: file, line:column, problem."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    begun = getattr(exc, "context_mark", None)
    if context and begun is not None and (mark is None or begun.line != mark.line):
        context += f" that starts at line {begun.line + 1}, column {begun.column + 1}"
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"config file {str(path)!r} is not valid YAML{at}: {problem}" + (
        f" ({context})" if context else ""
    )


def parse_yaml(text: str, where: str, error: type[Exception] = ConfigError) -> object:
    """YAML ``text`` read safely (``yaml.safe_load``) within :data:`MAX_DEPTH` and
    :data:`MAX_YAML_NODES`; ``error`` naming ``where`` and the limit otherwise.

    Aliases are counted as what they expand to, before anything is built, so a "billion
    laughs" document is refused at once; an alias that refers to itself is refused too.

    Raises:
        yaml.YAMLError: the text is not YAML (the caller words it).
    """
    loader = _limited_loader()(text)
    loader.where, loader.error = where, error
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


@functools.cache
def _limited_loader() -> type:
    """``yaml.SafeLoader`` that refuses deep nesting and alias expansion past the limits."""
    import yaml

    class LimitedLoader(yaml.SafeLoader):
        where = "YAML text"
        error: type[Exception] = ConfigError
        depth = 0

        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    mark = self.peek_event().start_mark
                    raise self.error(
                        f"{self.where} nests deeper than {MAX_DEPTH} levels, the limit (line "
                        f"{mark.line + 1})"
                    )
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def compose_document(self):  # type: ignore[no-untyped-def]
            node = super().compose_document()
            if _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
                raise self.error(
                    f"{self.where} expands to more than {MAX_YAML_NODES} values through its "
                    "aliases (*name), the limit (or an alias refers to itself); write the "
                    "values out"
                )
            return node

    return LimitedLoader


def _children(node: object) -> list:
    value = getattr(node, "value", None)
    if not isinstance(value, list):
        return []  # a scalar
    return [part for item in value for part in (item if isinstance(item, tuple) else (item,))]


def _expanded_size(root: object, limit: int) -> int:
    """How many nodes a composed YAML tree holds with every alias expanded, capped at
    ``limit + 1`` (also for a cycle). Iterative, each shared node counted once."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[object, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            sizes[key] = min(total, limit + 1)
        elif key in open_nodes:
            return limit + 1  # an alias inside the node it names
        elif key not in sizes:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
    return sizes[id(root)]


def read_yaml_mapping(
    path: str | Path, what: str = "options", *, limit: int = SMALL_FILE_LIMIT
) -> dict:
    """Read a YAML file that must hold a mapping (a config file); clear errors otherwise.

    An empty file (the null device too) is an empty mapping. The limits of :func:`read_text`
    and :func:`parse_yaml` apply.
    """
    import yaml

    path = Path(path)
    text = read_text(path, what="config file", limit=limit, error=ConfigError)
    try:
        data = parse_yaml(text, f"config file {str(path)!r}") or {}
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(path, exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of {what}; found {type(data).__name__}"
        )
    return data
